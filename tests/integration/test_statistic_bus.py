"""The statistic bus: a statistic and a rule defined here only drive the sampling scheduler.

``ToyStat`` (a callback providing ``"toy_stat"``) and ``ToyProportional`` (a weighting rule
reading it) live in this file; gradbal is not edited. Real ``Trainer.fit`` runs of the plain
3-task classifier (tests/integration/_three_tasks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from gradbal.callbacks import Measurement, StatisticSource, TaskSamplingScheduler
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import TaskWeighting
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

TOY = [1.0, 2.0, 5.0]  # per task, in the DataModule's task order


class ToyStat(pl.Callback, StatisticSource):
    """Measures ``values`` at every optimiser step ``s`` with ``s % every == 0``."""

    provides = "toy_stat"

    def __init__(self, values: list[float], every: int = 1) -> None:
        self.values, self.every = list(values), every
        self.measured: Measurement | None = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            values = torch.tensor(self.values, dtype=torch.float64)
            self.measured = Measurement(step, values, torch.ones(len(values), dtype=torch.bool))

    def latest(self) -> Measurement | None:
        return self.measured


class ToyProportional(TaskWeighting):
    """Probabilities proportional to the toy statistic."""

    statistic = "toy_stat"

    def forward(self, stats: Tensor) -> Tensor:
        return stats

    def __repr__(self) -> str:
        return "ToyProportional()"


class _Probs(pl.Callback):
    """The DataModule's sampling probabilities after every batch (listed last)."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.rows.append(list(trainer.datamodule.sampling_probs))  # type: ignore[attr-defined]


def fit(root: Path, callbacks: list[pl.Callback], max_steps: int = 4) -> list[list[float]]:
    probs = _Probs()
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4, seed=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=[*callbacks, probs],
        default_root_dir=root,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ThreeTaskClassifier(), dm)
    return probs.rows


@pytest.mark.parametrize("source_first", [True, False], ids=["source_first", "scheduler_first"])
def test_a_toy_source_and_rule_drive_the_sampling_probabilities(
    tmp_path: Path, source_first: bool
) -> None:
    source = ToyStat(TOY)
    scheduler = TaskSamplingScheduler(ToyProportional(), every=1, ema=0.0, floor=0.0)
    rows = fit(tmp_path, [source, scheduler] if source_first else [scheduler, source])
    expected = [v / sum(TOY) for v in TOY]  # [0.125, 0.25, 0.625]
    assert len(rows) == 4  # the first update follows the first batch (global_step 1)
    for row in rows:
        assert row == pytest.approx(expected, abs=1e-12)
    assert scheduler.schedule.average == pytest.approx(TOY)


def test_a_measurement_is_folded_in_once_by_its_step(tmp_path: Path) -> None:
    """The source measures at step 0 only; values changed afterwards under the same step are
    never read, because freshness is judged by Measurement.step."""
    source = ToyStat(TOY, every=100)

    class Mutate(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if source.measured is not None:  # same step, other values: stale
                stale = source.measured.values.flip(0)
                source.measured = Measurement(source.measured.step, stale, source.measured.valid)

    scheduler = TaskSamplingScheduler(ToyProportional(), every=1, ema=0.0, floor=0.0)
    rows = fit(tmp_path, [source, scheduler, Mutate()])
    assert rows[-1] == pytest.approx([v / sum(TOY) for v in TOY], abs=1e-12)
    # Folded in after the first batch (global_step 1) and never again: 3 steps old at step 4.
    assert scheduler.schedule.stat_age(4) == [3.0, 3.0, 3.0]


def test_a_rule_without_its_source_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        fit(tmp_path, [TaskSamplingScheduler(ToyProportional())])
    message = str(err.value)
    for part in ("reads 'toy_stat' for ToyProportional()", "exactly one ToyStat", "found 0"):
        assert part in message
    assert "Add `ToyStat(...)`" in message and "provide now: nothing" in message


def test_two_sources_of_one_statistic_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"found 2\. Keep only one of \['ToyStat', 'ToyStat'\]"):
        fit(tmp_path, [ToyStat(TOY), ToyStat(TOY), TaskSamplingScheduler(ToyProportional())])


def test_measurement_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match=r"values must be \[K\]"):
        Measurement(0, torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor of the shape of values"):
        Measurement(0, torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="stderr must have the shape"):
        Measurement(0, torch.ones(3), torch.ones(3, dtype=torch.bool), stderr=torch.ones(2))
