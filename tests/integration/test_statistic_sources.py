"""The statistic sources of issue 15 against hand computations on a small fit, and their resume.

Real ``Trainer.fit`` runs of :class:`RolloutClassifier` (tests/integration/_rollout_toy.py): a
3-task classifier that also reports synthetic binary rewards per group. A :class:`Recorder`
copies every batch's report; the expected values are computed from those rows with the
``statistics`` module and numpy, independently of gradbal's pooling code.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from gradbal.callbacks import (
    ExcessLossMonitor,
    LearnabilityMonitor,
    LearningProgressMonitor,
    MeanAbsAdvantageMonitor,
    NonZeroAdvantageMonitor,
    PooledGradNormMonitor,
    RewardAccuracyMonitor,
    RewardMarginMonitor,
    SignedLearningProgressMonitor,
    TaskGradNormMonitor,
    TaskLossMonitor,
)
from gradbal.callbacks._pooled_source import PooledSource
from gradbal.datamodules import MultiTaskDataModule
from tests.integration._rollout_toy import G, Recorder, RolloutClassifier
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

K = 3


def datamodule() -> MultiTaskDataModule:
    return MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=50, seed=0)


def fit(
    root: Path,
    callbacks: list[pl.Callback],
    max_steps: int,
    module: pl.LightningModule | None = None,
    ckpt_path: str | None = None,
) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=callbacks,
        default_root_dir=root,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module or RolloutClassifier(), datamodule(), ckpt_path=ckpt_path)
    return trainer


def mean_se(units: list[float]) -> tuple[float, float]:
    return statistics.fmean(units), statistics.stdev(units) / math.sqrt(len(units))


def per_task_groups(
    recorder: Recorder, steps: set[int]
) -> dict[int, list[tuple[int, list[float], list[float]]]]:
    """task -> [(step, rewards of the group, advantages of the group)] of the given steps."""
    out: dict[int, list[tuple[int, list[float], list[float]]]] = {k: [] for k in range(K)}
    for r in recorder.rollouts:
        if r.step not in steps:
            continue
        for start in range(0, r.rewards.numel(), G):
            rows = slice(start, start + G)
            task = int(r.task_ids[start])
            out[task].append((r.step, r.rewards[rows].tolist(), r.advantages[rows].tolist()))
    return out


def check(source: PooledSource, expected: dict[int, tuple[float, float]], step: int) -> None:
    m = source.latest()
    assert m is not None and m.step == step and m.stderr is not None
    assert m.valid.tolist() == [k in expected for k in range(K)]
    for k, (value, se) in expected.items():
        assert m.values[k].item() == pytest.approx(value, rel=1e-9, abs=1e-12), (k, "value")
        assert m.stderr[k].item() == pytest.approx(se, rel=1e-9, abs=1e-12), (k, "stderr")


def test_rollout_and_loss_sources_match_a_hand_computation(tmp_path: Path) -> None:
    """Window 2, 4 steps: the measurement after step 4 pools the batches of steps 2 and 3."""
    sources: dict[str, PooledSource] = {
        "learnability": LearnabilityMonitor(window=2),
        "share": NonZeroAdvantageMonitor(window=2),
        "abs": MeanAbsAdvantageMonitor(window=2),
        "progress": LearningProgressMonitor(window=2),
        "signed": SignedLearningProgressMonitor(window=2),
        "loss": TaskLossMonitor(window=2),
        "excess": ExcessLossMonitor(window=2),
        "margin": RewardMarginMonitor(window=2),
        "accuracy": RewardAccuracyMonitor(window=2),
    }
    recorder = Recorder()
    fit(tmp_path, [*sources.values(), recorder], max_steps=4)
    groups = per_task_groups(recorder, {2, 3})
    assert all(len(g) >= 3 for g in groups.values())

    check(sources["learnability"], {k: mean_se([statistics.pvariance(r) for _, r, _ in g]) for k, g in groups.items()}, 4)  # fmt: skip
    check(sources["share"], {k: mean_se([float(max(r) > min(r)) for _, r, _ in g]) for k, g in groups.items()}, 4)  # fmt: skip
    check(sources["abs"], {k: mean_se([sum(map(abs, a)) / G for _, _, a in g]) for k, g in groups.items()}, 4)  # fmt: skip

    slopes = {}
    for k, g in groups.items():
        t = np.array([s - 2 for s, _, _ in g], dtype=float)
        y = np.array([statistics.fmean(r) for _, r, _ in g])
        slope, intercept = np.polyfit(t, y, 1)
        ssr = float(((y - slope * t - intercept) ** 2).sum())
        se = math.sqrt(ssr / (len(t) - 2) / float(((t - t.mean()) ** 2).sum()))
        slopes[k] = (float(slope), se)
    check(sources["signed"], slopes, 4)
    check(sources["progress"], {k: (abs(v), se) for k, (v, se) in slopes.items()}, 4)
    assert any(v > 0 for v, _ in slopes.values())  # the rates rise: a slope to find

    def losses(steps: set[int]) -> dict[int, tuple[float, float]]:
        rows: dict[int, list[float]] = {k: [] for k in range(K)}
        for step, shares, task_ids in recorder.shares:
            if step in steps:  # the classifier's shares are ce / N: row loss = N * share
                for share, task in zip(shares.tolist(), task_ids.tolist(), strict=True):
                    rows[task].append(share * shares.numel())
        return {k: mean_se(v) for k, v in rows.items()}

    margins: dict[int, list[float]] = {k: [] for k in range(K)}
    for pairs in recorder.pairs:
        if pairs.step in (2, 3):
            for c, r, task in zip(pairs.chosen_rewards.tolist(), pairs.rejected_rewards.tolist(), pairs.task_ids.tolist(), strict=True):  # fmt: skip
                margins[task].append(c - r)
    check(sources["margin"], {k: mean_se(v) for k, v in margins.items()}, 4)
    check(sources["accuracy"], {k: mean_se([float(v > 0) for v in m]) for k, m in margins.items()}, 4)  # fmt: skip

    now, first = losses({2, 3}), losses({0, 1})
    check(sources["loss"], now, 4)
    excess = {k: (now[k][0] - first[k][0], math.hypot(now[k][1], first[k][1])) for k in range(K)}
    check(sources["excess"], excess, 4)
    assert all(v != 0 for v, _ in excess.values())  # not the baseline window's own value


def test_the_baseline_window_reports_no_excess_loss(tmp_path: Path) -> None:
    source = ExcessLossMonitor(window=2)
    fit(tmp_path, [source], max_steps=2)
    m = source.latest()
    assert m is not None and not m.valid.any() and torch.isnan(m.values).all()
    assert source.baseline is not None and torch.isfinite(source.baseline).all()


def test_pooled_grad_norm_divides_the_summed_cross_sums_once(tmp_path: Path) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", estimator="all_pairs", every_n_steps=1)
    pooled = PooledGradNormMonitor(window=3)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    class Sums(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            assert monitor.stats is not None
            s = monitor.stats
            seen.append((s.cross.clone(), s.pairs.clone(), s.unbiased_sq.clone()))  # type: ignore[union-attr]

    fit(tmp_path, [pooled, monitor, Sums()], max_steps=3, module=ThreeTaskClassifier())
    for cross, pairs, unbiased in seen:  # the exposed sums are the estimate's
        torch.testing.assert_close(cross / pairs, unbiased)
    expected = {}
    for k in range(K):
        x = [float(c[k]) for c, _, _ in seen]
        r = [float(p[k]) for _, p, _ in seen]
        value = sum(x) / sum(r)
        d2 = sum((xi - value * ri) ** 2 for xi, ri in zip(x, r, strict=True))
        expected[k] = (value, math.sqrt(len(x) / (len(x) - 1) * d2) / sum(r))
        assert value != pytest.approx(statistics.fmean([float(u[k]) for _, _, u in seen]))
    check(pooled, expected, 3)


SOURCES = [
    RewardMarginMonitor,
    RewardAccuracyMonitor,
    LearnabilityMonitor,
    NonZeroAdvantageMonitor,
    MeanAbsAdvantageMonitor,
    LearningProgressMonitor,
    TaskLossMonitor,
    ExcessLossMonitor,
]


def test_every_source_resumes_mid_window_exactly(tmp_path: Path) -> None:
    """Window 3: uninterrupted 7 steps against 4 steps, a checkpoint, and 3 more."""

    def build() -> list[PooledSource]:
        grad = TaskGradNormMonitor(params="all_linear", estimator="all_pairs", every_n_steps=1)
        return [cls(window=3) for cls in SOURCES] + [PooledGradNormMonitor(window=3), grad]  # type: ignore[misc]

    whole = build()
    fit(tmp_path / "whole", whole, max_steps=7)
    first = build()
    trainer = fit(tmp_path / "a", first, max_steps=4)
    path = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(path)
    assert any(torch.tensor(s.state_dict()["sums"]).abs().sum() > 0 for s in first[:-1])  # type: ignore[union-attr]
    resumed = build()
    fit(tmp_path / "b", resumed, max_steps=7, ckpt_path=str(path))
    for a, b in zip(whole[:-1], resumed[:-1], strict=True):
        assert a.state_dict() == b.state_dict(), type(a).__name__
        m = a.latest()
        assert m is not None and m.step == 6 and m.valid.any(), type(a).__name__


def test_a_reused_rollout_is_counted_once(tmp_path: Path) -> None:
    class Reusing(RolloutClassifier):
        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            assert self.last_rollout is not None
            self.last_rollout = self.last_rollout._replace(new=self.global_step % 2 == 0)
            return loss

    source = LearnabilityMonitor(window=4)
    recorder = Recorder()
    fit(tmp_path, [source, recorder], max_steps=4, module=Reusing())
    groups = per_task_groups(recorder, {0, 2})
    expected = {k: mean_se([statistics.pvariance(r) for _, r, _ in g]) for k, g in groups.items()}
    check(source, expected, 4)


def test_the_gradient_rules_read_the_pooled_norm_and_schedule_with_it(tmp_path: Path) -> None:
    """InverseGradNorm(statistic="grad_norm_sq_pooled") finds PooledGradNormMonitor, the
    scheduler's average is the pooled value, and the default repr (the state key) is unchanged."""
    from gradbal.callbacks import TaskSamplingScheduler
    from gradbal.weighting import GradProportional, InverseGradNorm

    assert repr(InverseGradNorm()) == "InverseGradNorm(power=1.0)"
    assert "statistic='grad_norm_sq_pooled'" in repr(
        GradProportional(statistic="grad_norm_sq_pooled")
    )
    with pytest.raises(ValueError, match="reads a squared gradient norm"):
        InverseGradNorm(statistic="learnability")  # type: ignore[arg-type]
    monitor = TaskGradNormMonitor(params="all_linear", estimator="all_pairs", every_n_steps=1)
    pooled = PooledGradNormMonitor(window=2)
    rule = InverseGradNorm(statistic="grad_norm_sq_pooled")
    scheduler = TaskSamplingScheduler(rule, every=2, ema=0.0, floor=0.0, min_groups_per_task=0)
    fit(tmp_path, [pooled, monitor, scheduler], max_steps=4, module=ThreeTaskClassifier())
    assert scheduler.schedule.source is pooled
    m = pooled.latest()
    assert m is not None and bool(m.valid.all())
    assert scheduler.schedule.average == pytest.approx(m.values.tolist())
    assert scheduler.schedule.num_updates + scheduler.schedule.num_held >= 1
