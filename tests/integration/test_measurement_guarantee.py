"""The measurement guarantee: a rule whose input differences are within their standard errors
leaves the mixture alone (and says why, once); a clear signal moves it; no s.e., no change.

A toy source defined here reports fixed values with fixed standard errors every step; real
``Trainer.fit`` runs of the plain 3-task classifier (tests/integration/_three_tasks.py).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from gradbal import task_loss_weights
from gradbal.callbacks import (
    Measurement,
    StatisticSource,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import TaskWeighting
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

VALUES = [1.0, 2.0, 5.0]
UNIFORM = [1 / 3] * 3


class NoisyStat(pl.Callback, StatisticSource):
    """``VALUES`` with standard error ``se`` (None: no s.e.) at every optimiser step."""

    provides = "noisy_stat"

    def __init__(self, se: float | None) -> None:
        self.se = se
        self.measured: Measurement | None = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args: Any) -> None:
        values = torch.tensor(VALUES, dtype=torch.float64)
        stderr = None if self.se is None else torch.full_like(values, self.se)
        self.measured = Measurement(
            trainer.global_step, values, torch.ones(3, dtype=torch.bool), stderr
        )

    def latest(self) -> Measurement | None:
        return self.measured


class Proportional(TaskWeighting):
    statistic = "noisy_stat"

    def forward(self, stats: Tensor) -> Tensor:
        return stats

    def __repr__(self) -> str:
        return "Proportional()"


def fit(root: Path, se: float | None, ema: float = 0.0) -> tuple[list[float], RuleSchedule]:
    scheduler = TaskSamplingScheduler(Proportional(), every=1, ema=ema, floor=0.0)
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        callbacks=[NoisyStat(se), scheduler],
        default_root_dir=root,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ThreeTaskClassifier(), dm)
    return list(dm.sampling_probs), scheduler.schedule


def test_differences_within_noise_leave_the_mixture_unchanged_and_warn_once(
    tmp_path: Path,
) -> None:
    # |5 - 1| = 4 < 2 * sqrt(2) * 1.5 = 4.24: every pair is within 2 s.e. of its difference
    with pytest.warns(RuntimeWarning) as record:
        probs, schedule = fit(tmp_path, se=1.5)
    held = [str(w.message) for w in record if "kept the current probabilities" in str(w.message)]
    assert len(held) == 1
    assert "'noisy_stat'" in held[0] and "5 ± 1.5" in held[0] and "= 0.94)" in held[0]
    assert probs == pytest.approx(UNIFORM, abs=1e-12)
    assert schedule.num_held == 3 and schedule.num_updates == 0
    assert schedule.variance == pytest.approx([1.5**2] * 3)


def test_a_clear_signal_changes_the_mixture(tmp_path: Path) -> None:
    # |2 - 1| = 1 > 2 * sqrt(2) * 0.3 = 0.85: the closest pair is told apart
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        probs, schedule = fit(tmp_path, se=0.3)
    assert probs == pytest.approx([v / sum(VALUES) for v in VALUES], abs=1e-12)
    assert schedule.num_held == 0 and schedule.num_updates == 3


def test_a_source_without_standard_errors_behaves_as_before(tmp_path: Path) -> None:
    probs, schedule = fit(tmp_path, se=None)
    assert probs == pytest.approx([v / sum(VALUES) for v in VALUES], abs=1e-12)
    assert schedule.num_held == 0 and all(math.isnan(v) for v in schedule.variance)


def test_the_average_carries_the_variance_of_an_ema(tmp_path: Path) -> None:
    """Three measurements with s.e. 1 folded in with decay 0.5: v = 1, then 0.25 v + 0.25 each
    step (0.5, 0.375). Never held: |5 - 1| = 4 > 2 * sqrt(2) = 2.83 (the bound at v = 1), one
    pair told apart is enough to act."""
    _, schedule = fit(tmp_path, se=1.0, ema=0.5)
    assert schedule.variance == pytest.approx([0.375] * 3)
    state = schedule.state_dict()
    assert state["variance"] == pytest.approx([0.375] * 3) and state["num_held"] == 0


@pytest.mark.parametrize(("se", "held"), [(1.5, True), (0.3, False)], ids=["noisy", "clear"])
def test_the_loss_reweighter_keeps_its_weights_within_noise(
    tmp_path: Path, se: float, held: bool
) -> None:
    reweighter = TaskLossReweighter(Proportional(), every=1, ema=0.0, floor=0.0)
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4, seed=0)
    module = ThreeTaskClassifier()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        callbacks=[NoisyStat(se), reweighter],
        default_root_dir=tmp_path,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(module, dm)
    weights = task_loss_weights(module)
    if held:
        assert weights is None or weights.tolist() == [1.0, 1.0, 1.0]  # the starting weights
        assert reweighter.schedule.num_held == 3
    else:
        assert weights is not None
        expected = [3 * v / sum(VALUES) for v in VALUES]  # loss weights average 1
        assert weights.tolist() == pytest.approx(expected, rel=1e-6)
