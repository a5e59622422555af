"""The statistic sources on gradbal's own GRPO and DPO modules, against what the modules log.

With ``window=1`` a source's measurement after a step is that step's batch, so it must equal
the per-task means the module itself logs for the step (computed by other code:
``log_task_means``): ``1 - train/zero_std_frac``, ``train/abs_advantage``,
``train/rewards/margins``, ``train/rewards/accuracies``, ``train/loss``. Tiny random models, 2
steps, CPU.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from gradbal.callbacks import (
    LearnabilityMonitor,
    MeanAbsAdvantageMonitor,
    NonZeroAdvantageMonitor,
    RewardAccuracyMonitor,
    RewardMarginMonitor,
    TaskLossMonitor,
)
from gradbal.callbacks._pooled_source import PooledSource
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import DPOModule, GRPOModule
from gradbal.objectives import DPO, GRPOAggregation
from gradbal.tasks import (
    Addition,
    Countdown,
    PreferenceArithmetic,
    PreferenceFormat,
    Reverse,
)


def fit(tmp_path: Path, module: pl.LightningModule, dm: Any, callbacks: list[Any]) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.fit(module, dm)
    return trainer


def compare(
    trainer: pl.Trainer, source: PooledSource, logged: str, present: set[int], transform: Any = None
) -> None:
    """Assert the source measured exactly the tasks of the last batch, at the values the module
    logged for them (callback_metrics keep older steps' values of absent tasks: not compared)."""
    m = source.latest()
    assert m is not None and m.step == 2
    assert set(m.valid.nonzero().flatten().tolist()) == present
    names = trainer.datamodule.task_names  # type: ignore[attr-defined]
    metrics = trainer.callback_metrics
    for k in present:
        value = float(metrics[f"{logged}/{names[k]}"])
        want = value if transform is None else transform(value)
        assert float(m.values[k]) == pytest.approx(want, rel=1e-5, abs=1e-6), names[k]
        assert f"train/{source.provides}/{names[k]}" in metrics  # logged by the source


def test_grpo_rollout_sources_match_the_module_logs(tmp_path: Path) -> None:
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        loss_aggregation=GRPOAggregation(),
        num_generations=4,
        max_new_tokens=4,
    )
    dm = MultiTaskDataModule(
        [
            Addition(n_train=32, n_val=4),
            Reverse(n_train=32, n_val=4),
            Countdown(n_train=32, n_val=4),
        ],
        batch_size=6,
        steps_per_epoch=4,
    )
    share = NonZeroAdvantageMonitor(window=1, min_units=1)
    absolute = MeanAbsAdvantageMonitor(window=1, min_units=1)
    learnability = LearnabilityMonitor(window=1, min_units=1)
    trainer = fit(tmp_path, module, dm, [share, absolute, learnability])
    report = module.last_rollout
    assert report is not None and report.step == 1 and report.new
    present = set(report.task_ids.tolist())
    assert len(present) >= 2
    compare(trainer, share, "train/zero_std_frac", present, lambda v: 1 - v)
    compare(trainer, absolute, "train/abs_advantage", present)
    g = module.num_generations
    per_task: dict[int, list[float]] = {}
    for start in range(0, report.rewards.numel(), g):
        var = statistics.pvariance(report.rewards[start : start + g].tolist())
        per_task.setdefault(int(report.task_ids[start]), []).append(var)
    m = learnability.latest()
    assert m is not None
    for k, variances in per_task.items():
        assert float(m.values[k]) == pytest.approx(statistics.fmean(variances), abs=1e-7)


def test_dpo_pair_and_loss_sources_match_the_module_logs(tmp_path: Path) -> None:
    module = DPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        DPO(beta=0.1),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    dm = MultiTaskDataModule(
        [PreferenceFormat(n_train=32, n_val=4), PreferenceArithmetic(n_train=32, n_val=4)],
        batch_size=8,
        steps_per_epoch=4,
    )
    margin = RewardMarginMonitor(window=1, min_units=1)
    accuracy = RewardAccuracyMonitor(window=1, min_units=1)
    loss = TaskLossMonitor(window=1, min_units=1)
    trainer = fit(tmp_path, module, dm, [margin, accuracy, loss])
    report = module.last_preferences
    assert report is not None and report.step == 1
    present = set(report.task_ids.tolist())
    assert present == {0, 1}
    compare(trainer, margin, "train/rewards/margins", present)
    compare(trainer, accuracy, "train/rewards/accuracies", present)
    compare(trainer, loss, "train/loss", present)
    m = margin.latest()
    assert m is not None and m.stderr is not None
    assert all(math.isfinite(v) and v > 0 for v in m.stderr.tolist())  # several pairs a task


def test_grpo_reports_a_reused_rollout_as_not_new(tmp_path: Path) -> None:
    """num_iterations=2: steps 0 and 2 generate, steps 1 and 3 train again on the same rows,
    which the sources must not count twice."""
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        loss_aggregation=GRPOAggregation(),
        num_generations=2,
        max_new_tokens=3,
        num_iterations=2,
    )
    dm = MultiTaskDataModule([Addition(n_train=16, n_val=4)], batch_size=2, steps_per_epoch=8)
    seen: list[tuple[int, bool, list[float]]] = []

    class Flags(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
            r = pl_module.last_rollout
            seen.append((r.step, r.new, r.rewards.tolist()))

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        default_root_dir=tmp_path,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[Flags()],
    )
    trainer.fit(module, dm)
    assert [(step, new) for step, new, _ in seen] == [(0, True), (1, False), (2, True), (3, False)]
    assert seen[1][2] == seen[0][2] and seen[3][2] == seen[2][2]  # the same rollout's rewards
