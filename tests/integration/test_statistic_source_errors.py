"""docs/errors.md Q01..Q10: each bad input of the statistic sources triggered, with its message.

The doc's "what you get" cell is the message with ``…`` where it is abbreviated; every piece
between the ``…`` must appear in the real message, in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from gradbal.callbacks import (
    LearnabilityMonitor,
    Measurement,
    PooledGradNormMonitor,
    RewardMarginMonitor,
    StatisticSource,
    TaskLossMonitor,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import LearnabilityProportional
from tests.integration._errors_doc import assert_documented, check_doc_rows
from tests.integration._rollout_toy import RolloutClassifier
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

ROOT: list[Path] = []


def fit(
    callbacks: list[pl.Callback], module: pl.LightningModule | None = None, dm: Any = None
) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        callbacks=callbacks,
        default_root_dir=ROOT[0],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    dm = dm or MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4)
    trainer.fit(module or ThreeTaskClassifier(), dm)


class StaleRollouts(RolloutClassifier):
    """Reports its rollout in the first step only."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        kept = self.last_rollout
        loss = super().training_step(batch, batch_idx)
        if kept is not None:
            self.last_rollout = kept
        return loss


class NoTaskLosses(ThreeTaskClassifier):
    """Returns the loss without report_task_losses."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        super().training_step(batch, batch_idx)
        del self.task_losses
        x = torch.tensor([row["x"] for row in batch["columns"]], dtype=torch.float32)
        return self.net(x).square().mean()


class Endless(IterableDataset):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        while True:
            yield {"x": torch.zeros(6)}


class EndlessData(pl.LightningDataModule):
    task_names = ("a", "b")

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(Endless(), batch_size=2)


class NoSums(pl.Callback, StatisticSource):
    provides = "grad_norm_sq"

    def latest(self) -> Measurement | None:
        return None


def restored_for_two_tasks() -> LearnabilityMonitor:
    source = LearnabilityMonitor(window=2)
    source.load_state_dict({"sums": [[0.0, 0.0]] * 6, "window_start": 0, "measurement": None})
    return source


def held() -> None:
    """LearnabilityProportional on tasks of equal success rate: differences are noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        scheduler = TaskSamplingScheduler(LearnabilityProportional(), every=2, ema=0.0)
        fit([LearnabilityMonitor(window=2), scheduler], RolloutClassifier(rates=(0.5,) * 3))


CASES: dict[str, Callable[[], object]] = {
    "Q01": lambda: LearnabilityMonitor(window=0),
    "Q02": lambda: TaskLossMonitor(min_units=0),
    "Q03": lambda: fit([LearnabilityMonitor()]),
    "Q04": lambda: fit([RewardMarginMonitor()]),
    "Q05": lambda: fit([LearnabilityMonitor(window=2)], StaleRollouts()),
    "Q06": lambda: fit([TaskLossMonitor(window=2)], NoTaskLosses()),
    "Q07": lambda: fit([LearnabilityMonitor(window="epoch")], RolloutClassifier(), EndlessData()),
    "Q08": lambda: fit([restored_for_two_tasks()], RolloutClassifier()),
    "Q09": lambda: fit([PooledGradNormMonitor(), NoSums()]),
    "Q10": held,
}
TYPES: dict[str, type[BaseException] | type[Warning]] = {
    "Q01": ValueError,
    "Q02": ValueError,
    **{f"Q{i:02d}": RuntimeError for i in range(3, 10)},
    "Q10": RuntimeWarning,
}


def test_the_doc_lists_the_q_rows() -> None:
    check_doc_rows("Q", TYPES)


@pytest.mark.parametrize("row", CASES)
def test_each_q_row_gives_the_documented_message(row: str, tmp_path: Path) -> None:
    ROOT[:] = [tmp_path]
    with pytest.raises(TYPES[row]) as err:  # type: ignore[call-overload]
        CASES[row]()
    assert_documented(str(err.value), "Q", row)
