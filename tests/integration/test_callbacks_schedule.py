"""The scheduler's inputs: order-independent, measured for every task, never blocked by one task.

Real ``Trainer.fit`` runs of the plain 3-task classifier (tests/integration/_three_tasks.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.tasks import TaskSource
from gradbal.weighting import InverseGradNorm, LearningGainProportional
from tests.integration._errors_doc import check_doc_rows
from tests.integration._three_tasks import NAMES, ThreeTaskClassifier, synthetic_tasks


class _Record(pl.Callback):
    """After every batch (listed last): the scheduler's averages and the DataModule's mixture."""

    def __init__(self) -> None:
        self.rows: list[tuple[list[float], list[float]]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        sched = next(
            cb
            for cb in trainer.callbacks  # type: ignore[attr-defined]
            if isinstance(cb, (TaskSamplingScheduler, TaskLossReweighter))
        )
        dm = trainer.datamodule  # type: ignore[attr-defined]
        self.rows.append((list(sched.schedule.average), list(dm.sampling_probs)))


def fit(
    root: Path,
    callbacks: list[pl.Callback],
    max_steps: int = 8,
    trainer_kwargs: dict[str, Any] | None = None,
    **dm_kwargs: Any,
) -> tuple[_Record, MultiTaskDataModule, pl.Trainer]:
    record = _Record()
    kwargs = {"batch_size": 24, "steps_per_epoch": 4, "seed": 0, **dm_kwargs}
    tasks: list[TaskSource] = list(synthetic_tasks())
    dm = MultiTaskDataModule(tasks, **kwargs)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=[*callbacks, record],
        default_root_dir=root,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **(trainer_kwargs or {}),
    )
    trainer.fit(ThreeTaskClassifier(), dm)
    return record, dm, trainer


ORDER_CASES = {
    "learning_gain": lambda: (
        LearningGainMonitor(window=1, metric="train/accuracy/{task}"),
        TaskSamplingScheduler(LearningGainProportional(), every=2, ema=0.5),
    ),
    "grad_norm": lambda: (
        TaskGradNormMonitor(params="all_linear", every_n_steps=1),
        TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5),
    ),
}


@pytest.mark.parametrize("case", ORDER_CASES)
def test_scheduler_input_does_not_depend_on_callback_order(tmp_path: Path, case: str) -> None:
    monitor_first, *_ = fit(tmp_path / "a", list(ORDER_CASES[case]()))
    scheduler_first, *_ = fit(tmp_path / "b", list(reversed(ORDER_CASES[case]())))
    assert len(monitor_first.rows) == 8
    for step, (a, b) in enumerate(zip(monitor_first.rows, scheduler_first.rows, strict=True)):
        assert repr(a) == repr(b), f"step {step}: {a} != {b}"  # bit for bit, NaN == NaN


class _MeasuredTasks(pl.Callback):
    """Per measured step of the monitor: which tasks got a valid estimate."""

    def __init__(self, monitor: TaskGradNormMonitor) -> None:
        self.monitor, self.seen = monitor, -1
        self.valid: dict[int, list[bool]] = {}

    def on_train_batch_end(self, *args: Any) -> None:
        stats = self.monitor.stats
        if stats is not None and self.monitor.stats_step > self.seen:
            self.seen = self.monitor.stats_step
            self.valid[self.seen] = stats.valid.tolist()


RARE = [0.96, 0.02, 0.02]  # p = 0.02, 8 prompts: >= 2 of a task in one step in ~1% of steps


@pytest.mark.parametrize(
    ("accumulate", "steps_per_epoch"), [(1, 4), (2, 3)]
)  # (2, 3): the last batch of each epoch is an optimiser step of its own
def test_a_low_probability_task_is_measured_at_every_measured_step(
    tmp_path: Path, accumulate: int, steps_per_epoch: int
) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=2)
    measured = _MeasuredTasks(monitor)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1000, floor=0.0)  # never updates
    _, dm, trainer = fit(
        tmp_path,
        [scheduler, monitor, measured],
        max_steps=20,
        trainer_kwargs={"accumulate_grad_batches": accumulate},
        batch_size=8,
        sampling_probs=RARE,
        steps_per_epoch=steps_per_epoch,
    )
    assert dm.sampling_probs == pytest.approx(RARE)  # the mixture itself is unchanged
    assert sorted(measured.valid) == list(range(1, 20, 2))  # 10 measured steps
    assert all(all(valid) for valid in measured.valid.values()), measured.valid
    ages = [float(trainer.callback_metrics[f"train/sampling_stat_age/{n}"]) for n in NAMES]
    assert ages == [0.0, 0.0, 0.0]  # step 19 was measured, for every task


def test_a_small_batch_covers_every_task_in_rotation(tmp_path: Path) -> None:
    """batch 4 holds 2 prompts of only 2 of 3 tasks: each task measured every <= 2 measurements."""
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    measured = _MeasuredTasks(monitor)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1000, floor=0.0)
    _, dm, _ = fit(tmp_path, [monitor, scheduler, measured], 12, batch_size=4, sampling_probs=RARE)
    assert dm.tasks_per_measured_step == 2
    for task in range(3):
        steps = [s for s, valid in sorted(measured.valid.items()) if valid[task]]
        assert steps[0] <= 1 and max(b - a for a, b in itertools.pairwise(steps)) <= 2, steps


def test_a_never_measured_task_does_not_block_the_others(tmp_path: Path) -> None:
    """Task 'large' is never drawn (p = 0, no coverage): the other two are still rebalanced, it
    keeps its share, and every update names it; its stat age grows with training."""
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(
        InverseGradNorm(), every=2, ema=0.0, floor=0.0, min_groups_per_task=0
    )
    with pytest.warns(RuntimeWarning, match=r"no measurement yet for tasks \['large'\]") as caught:
        _, dm, trainer = fit(tmp_path, [monitor, scheduler], sampling_probs=[0.5, 0.5, 0.0])
    named = [w for w in caught if "['large'] keep their current share" in str(w.message)]
    assert len(named) == 4  # one per update (steps 2, 4, 6, 8)
    assert scheduler.schedule.num_updates == 4
    probs = dm.sampling_probs
    assert probs[2] == 0.0 and probs[0] != pytest.approx(0.5)
    # InverseGradNorm on the two measured tasks alone: p ∝ 1 / ||G|| (clamped to >= 1e-2 max)
    sq = torch.tensor(scheduler.schedule.average[:2], dtype=torch.float64)
    norms = sq.clamp_min(1e-2 * sq.max()).sqrt()
    assert probs[:2] == pytest.approx((1 / norms / (1 / norms).sum()).tolist(), rel=1e-9)
    assert float(trainer.callback_metrics["train/sampling_stat_age/large"]) == 8.0
    assert float(trainer.callback_metrics["train/sampling_stat_age/small"]) == 0.0


def test_reweighter_updates_measured_tasks_and_keeps_the_unmeasured_weight(
    tmp_path: Path,
) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    reweighter = TaskLossReweighter(InverseGradNorm(), every=2, floor=0.0)
    with pytest.warns(RuntimeWarning, match="keep their current share"):
        fit(tmp_path, [monitor, reweighter], max_steps=4, sampling_probs=[0.5, 0.5, 0.0])
    weights = reweighter.weights
    assert weights is not None and weights[2] == pytest.approx(1.0)  # its share 1/3 kept
    assert weights[0] != pytest.approx(1.0) and sum(weights) == pytest.approx(3.0)


class _NoCoverage(MultiTaskDataModule):
    """A DataModule with sampling probabilities but no measured-step coverage."""

    set_measured_steps = None  # type: ignore[assignment]


def test_errors_doc_c_rows(tmp_path: Path) -> None:
    """docs/errors.md C01..C05, each triggered here with the documented message (C05 in
    test_sampling_writers.py)."""
    with pytest.raises(ValueError, match=r"min_groups_per_task` must be >= 0 .*Got -1"):
        TaskSamplingScheduler(InverseGradNorm(), min_groups_per_task=-1)
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1000)
    dm = _NoCoverage(list[TaskSource](synthetic_tasks()), batch_size=8, steps_per_epoch=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        callbacks=[monitor, scheduler],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.warns(UserWarning, match=r"_NoCoverage has no `set_measured_steps`, so a task"):
        trainer.fit(ThreeTaskClassifier(), dm)
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1000)
    with pytest.warns(UserWarning, match=r"batch_size 1 cannot hold min_groups_per_task=2"):
        fit(tmp_path / "c03", [monitor, scheduler], max_steps=1, batch_size=1)
    # C04: test_a_never_measured_task_does_not_block_the_others
    # C05: test_sampling_writers.py
    check_doc_rows(
        "C",
        {
            "C01": ValueError,
            "C02": UserWarning,
            "C03": UserWarning,
            "C04": RuntimeWarning,
            "C05": RuntimeError,
        },
    )
