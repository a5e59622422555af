"""docs/errors.md F01..F10 (Skill-it, FAMO, GradNorm rules and their sources): each bad input
triggered, with its documented message.

The doc's "what you get" cell is the message with ``…`` where it is abbreviated; every piece
between the ``…`` must appear in the real message, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from gradbal import report_task_losses
from gradbal.callbacks import (
    FAMOReweighter,
    RewardShortfallMonitor,
    TaskLossMonitor,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import GradNormTarget, SkillGraphWeights
from tests.integration._errors_doc import check_doc_rows, doc_rows
from tests.integration._rollout_toy import RolloutClassifier
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

ROOT: list[Path] = []


def fit(callbacks: list[pl.Callback], module: pl.LightningModule | None = None) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        callbacks=callbacks,
        default_root_dir=ROOT[0],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4)
    trainer.fit(module or ThreeTaskClassifier(), dm)


class NegativeLoss(ThreeTaskClassifier):
    """Reports minus the cross-entropy: a loss that is negative."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        super().training_step(batch, batch_idx)
        losses = self.task_losses.losses
        return report_task_losses(self, -losses, self.task_losses.task_ids)


def restored_for_two_tasks() -> FAMOReweighter:
    famo = FAMOReweighter()
    famo.load_state_dict({"task_names": ["small", "large"], "logits": [0.0, 0.0]})
    return famo


CASES: dict[str, Callable[[], object]] = {
    "F01": lambda: SkillGraphWeights({"small": "large"}),  # type: ignore[dict-item]
    "F02": lambda: SkillGraphWeights(edge_weight=0.0),
    "F03": lambda: fit(
        [TaskLossMonitor(window=1), TaskSamplingScheduler(SkillGraphWeights({"small": ["huge"]}))]
    ),
    "F04": lambda: SkillGraphWeights({"small": ["large"]})(torch.ones(3)),
    "F05": lambda: GradNormTarget(alpha=-1.0),
    "F06": lambda: FAMOReweighter(lr=0.0),
    "F07": lambda: fit([TaskLossMonitor(window=1), FAMOReweighter()], RolloutClassifier()),
    "F08": lambda: fit([TaskLossMonitor(window=1), FAMOReweighter()], NegativeLoss()),
    "F09": lambda: RewardShortfallMonitor(max_reward=float("inf")),
    "F10": lambda: fit([TaskLossMonitor(window=1), restored_for_two_tasks()]),
}
TYPES: dict[str, type[BaseException] | type[Warning]] = {
    "F01": ValueError,
    "F02": ValueError,
    "F03": ValueError,
    "F04": RuntimeError,
    "F05": ValueError,
    "F06": ValueError,
    "F07": RuntimeError,
    "F08": RuntimeError,
    "F09": ValueError,
    "F10": RuntimeError,
}


def test_the_doc_lists_the_f_rows() -> None:
    check_doc_rows("F", TYPES)


@pytest.mark.parametrize("row", CASES)
def test_each_f_row_gives_the_documented_message(row: str, tmp_path: Path) -> None:
    ROOT[:] = [tmp_path]
    documented = doc_rows("F")[row].split(": ", 1)[1].strip("`")
    with pytest.raises(TYPES[row]) as err:  # type: ignore[call-overload]
        CASES[row]()
    message, position = str(err.value), 0
    assert message.startswith(f"{row}: "), message
    for piece in documented.split("…"):
        found = message.find(piece.strip(), position)
        assert found >= 0, (piece, message)
        position = found + len(piece.strip())
