"""Under 2-process CPU DDP (gloo, ddp_spawn), every rank sets the same sampling probabilities.

Each rank trains on its own slice of the global batch, so its local gradient shares differ; the
statistics are all-reduced and the result broadcast, so the decisions must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest

from gradbal import task_loss_weights
from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import InverseGradNorm
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks


class RecordPerRank(pl.Callback):
    """Writes, per rank, what every callback decided after each batch."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        monitor = next(cb for cb in trainer.callbacks if isinstance(cb, TaskGradNormMonitor))  # type: ignore[attr-defined]
        gains = next(cb for cb in trainer.callbacks if isinstance(cb, LearningGainMonitor))  # type: ignore[attr-defined]
        weights = task_loss_weights(pl_module)
        self.rows.append(
            {
                "probs": trainer.datamodule.sampling_probs,  # type: ignore[attr-defined]
                "weights": None if weights is None else weights.tolist(),
                "grad_sq": None if monitor.stats is None else monitor.stats.unbiased_sq.tolist(),
                "gains": None if gains.gains is None else gains.gains.tolist(),
            }
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.rows))


@pytest.mark.distributed
def test_ddp_ranks_take_identical_decisions(tmp_path: Path) -> None:
    callbacks = [
        TaskGradNormMonitor(params="all_linear", every_n_steps=1),
        TaskSamplingScheduler(InverseGradNorm(), every=2),
        TaskLossReweighter(InverseGradNorm(power=0.5), every=3),
        LearningGainMonitor(window=1, metric="train/accuracy/{task}"),
        RecordPerRank(tmp_path),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=6,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    dm = MultiTaskDataModule(synthetic_tasks(), batch_size=12, steps_per_epoch=3, seed=0)
    trainer.fit(ThreeTaskClassifier(), dm)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(rank0) == 6
    assert rank0 == rank1
    assert rank0[-1]["probs"] != rank0[0]["probs"]  # the scheduler did act
    assert len(set(rank0[-1]["weights"])) == 3  # so did the reweighter
