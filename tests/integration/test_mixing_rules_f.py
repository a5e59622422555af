"""The mixing rules of issue 15, part 3 (Skill-it, FAMO, GradNorm) in real fits, and their resume.

Real ``Trainer.fit`` runs of the plain 3-task classifier (tests/integration/_three_tasks.py) and
of :class:`RolloutClassifier` (its synthetic GRPO rollouts, success rates 0.2 / 0.5 / 0.9 rising
with the step). Each consumer: the weights (sampling probabilities or loss weights) move away
from where they started, and a run stopped at step 5 and resumed from its checkpoint ends with
the uninterrupted run's callback states, mixture, loss weights and parameters, bit for bit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint

from gradbal import task_loss_weights
from gradbal.callbacks import (
    FAMOReweighter,
    LossRatioMonitor,
    RewardShortfallMonitor,
    TaskGradNormMonitor,
    TaskLossMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import GradNormTarget, SkillGraphWeights
from tests.integration._rollout_toy import G, Recorder, RolloutClassifier
from tests.integration._three_tasks import NAMES, ThreeTaskClassifier, synthetic_tasks
from tests.integration.test_callbacks_resume import same

TOTAL, STOP = 9, 5


def fit(
    root: Path,
    max_steps: int,
    callbacks: list[pl.Callback],
    module: pl.LightningModule,
    ckpt: Path | None = None,
) -> MultiTaskDataModule:
    dm = MultiTaskDataModule(synthetic_tasks(), batch_size=24, steps_per_epoch=4, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=callbacks,
        default_root_dir=root,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=ckpt is not None
        or any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return dm


def test_the_new_sources_match_a_hand_computation(tmp_path: Path) -> None:
    """Window 2, 4 steps: the measurement after step 4 pools the batches of steps 2 and 3;
    the loss ratio's baseline is the window of steps 0 and 1."""
    shortfall, ratio, recorder = (
        RewardShortfallMonitor(window=2),
        LossRatioMonitor(window=2),
        Recorder(),
    )
    fit(tmp_path, 4, [shortfall, ratio, recorder], RolloutClassifier())

    def mean_se(units: list[float]) -> tuple[float, float]:
        return statistics.fmean(units), statistics.stdev(units) / math.sqrt(len(units))

    groups: dict[int, list[float]] = {k: [] for k in range(3)}  # 1 - each group's mean reward
    for r in recorder.rollouts:
        if r.step in (2, 3):
            for start in range(0, r.rewards.numel(), G):
                groups[int(r.task_ids[start])].append(
                    1 - r.rewards[start : start + G].mean().item()
                )
    rows: dict[tuple[int, bool], list[float]] = {(k, late): [] for k in range(3) for late in (0, 1)}
    for step, shares, task_ids in recorder.shares:  # row loss = N * share
        for share, task in zip(shares.tolist(), task_ids.tolist(), strict=True):
            rows[task, step >= 2].append(share * shares.numel())

    m = shortfall.latest()
    assert m is not None and m.stderr is not None and m.step == 4
    for k in range(3):
        value, se = mean_se(groups[k])
        assert m.values[k].item() == pytest.approx(value, rel=1e-9)
        assert m.stderr[k].item() == pytest.approx(se, rel=1e-9)
    m = ratio.latest()
    assert m is not None and m.stderr is not None and m.valid.all()
    for k in range(3):
        (now, se), (first, se0) = mean_se(rows[k, True]), mean_se(rows[k, False])
        assert m.values[k].item() == pytest.approx(now / first, rel=1e-9)
        expected_se = now / first * math.hypot(se / now, se0 / first)
        assert m.stderr[k].item() == pytest.approx(expected_se, rel=1e-9)


CASES: dict[str, tuple[Callable[[], list[pl.Callback]], Callable[[], pl.LightningModule]]] = {
    "skill_graph_sampling": (
        lambda: [
            RewardShortfallMonitor(window=2),
            TaskSamplingScheduler(
                SkillGraphWeights({"small": ["large"]}, eta=2.0, statistic="reward_shortfall"),
                every=2,
                ema=0.5,
            ),
        ],
        RolloutClassifier,
    ),
    "famo_loss_weights": (
        lambda: [TaskLossMonitor(window=1), FAMOReweighter(lr=0.1)],
        ThreeTaskClassifier,
    ),
    "grad_norm_target_loss_weights": (
        lambda: [
            TaskGradNormMonitor(params="all_linear", every_n_steps=1),
            LossRatioMonitor(window=2),
            TaskLossReweighter(GradNormTarget(alpha=1.5), every=2, ema=0.5),
        ],
        ThreeTaskClassifier,
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES)
def test_weights_move_and_a_resumed_run_continues_identically(tmp_path: Path, case: str) -> None:
    callbacks, module = CASES[case]
    full_callbacks, full = callbacks(), module()
    full_dm = fit(tmp_path / "full", TOTAL, list(full_callbacks), full)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=STOP, save_top_k=-1)
    fit(tmp_path / "part", STOP, [*callbacks(), ckpt], module())
    path = next((tmp_path / "ckpt").glob(f"*step={STOP}*.ckpt"))
    resumed_callbacks, resumed = callbacks(), module()
    resumed_dm = fit(tmp_path / "resumed", TOTAL, list(resumed_callbacks), resumed, ckpt=path)

    for a, b in zip(full_callbacks, resumed_callbacks, strict=True):
        assert same(a.state_dict(), b.state_dict()), (type(a).__name__, a.state_dict(), b.state_dict())  # fmt: skip
    assert full_dm.sampling_probs == resumed_dm.sampling_probs
    weights = task_loss_weights(full), task_loss_weights(resumed)
    assert (weights[0] is None) == (weights[1] is None)
    if weights[0] is not None:
        assert torch.equal(weights[0], weights[1])  # type: ignore[arg-type]
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)

    # The run changed the mixture or the weights (not two untouched defaults compared).
    if case == "skill_graph_sampling":
        probs = full_dm.sampling_probs
        assert max(probs) - min(probs) > 0.05, probs
        # Success rates 0.2 / 0.5 / 0.9 (rising): 'small' is furthest from solved and also
        # helps 'large' (s = L_small + 0.5 L_large), 'large' is nearly solved.
        assert probs[0] > probs[1] > probs[2], probs
    else:
        assert weights[0] is not None
        assert float((weights[0] - 1).abs().max()) > 1e-3, weights[0]
        assert float(weights[0].mean()) == pytest.approx(1.0, rel=1e-6)


def test_the_callbacks_and_sources_build_from_class_path() -> None:
    """LightningCLI builds trainer.callbacks from class_path/init_args with these signatures."""
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    config = (
        '[{"class_path": "gradbal.callbacks.FAMOReweighter", "init_args": {"lr": 0.05}},'
        ' {"class_path": "gradbal.callbacks.RewardShortfallMonitor", "init_args": {"window": 4}},'
        ' {"class_path": "gradbal.callbacks.LossRatioMonitor", "init_args": {"window": 2}},'
        ' {"class_path": "gradbal.callbacks.TaskSamplingScheduler", "init_args": {"rule": '
        '{"class_path": "gradbal.weighting.SkillGraphWeights", "init_args": '
        '{"graph": {"small": ["large"]}, "eta": 0.5}}}}]'
    )
    built = parser.instantiate_classes(parser.parse_args(["--callbacks", config])).callbacks
    assert [type(c).__name__ for c in built] == [
        "FAMOReweighter",
        "RewardShortfallMonitor",
        "LossRatioMonitor",
        "TaskSamplingScheduler",
    ]
    assert built[0].lr == 0.05 and built[1].window == 4
    assert built[3].rule.graph == {"small": ["large"]} and NAMES[0] == "small"
