"""Helpers of the sharded fit tests: ``DumpStats``, after every batch, appends each rank's
monitor statistics and sampling probabilities to ``<dirpath>/rank<r>.jsonl``; ``SpreadAddition``
gives a random policy's completions rewards with spread."""

from __future__ import annotations

import json
import os
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from gradbal.callbacks import TaskGradNormMonitor
from gradbal.tasks import Addition, Reverse, Task
from tests.integration._grpo_probe import length_reward


class DumpStats(Callback):
    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        monitor = next(c for c in trainer.callbacks if isinstance(c, TaskGradNormMonitor))
        stats = monitor.stats
        row = {
            "step": trainer.global_step,
            "stats_step": monitor.stats_step,
            "unbiased_sq": None if stats is None else stats.unbiased_sq.tolist(),
            "num_groups": None if stats is None else stats.num_groups.tolist(),
            "sampling_probs": list(trainer.datamodule.sampling_probs),  # type: ignore[attr-defined]
        }
        os.makedirs(self.dirpath, exist_ok=True)
        with open(os.path.join(self.dirpath, f"rank{trainer.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def _spread(task: Task) -> Task:
    return Task(task.name, train=task.train, validation=task.validation, reward=length_reward)


class SpreadAddition(Addition):
    """``Addition`` scored by completion length mod 3 (``_grpo_probe.length_reward``): a tiny
    random policy almost never answers exactly, so exact match gives zero advantages and zero
    gradients; this reward has spread within every group."""

    def load(self) -> Task:
        return _spread(super().load())


class SpreadReverse(Reverse):
    """``Reverse`` scored like :class:`SpreadAddition`."""

    def load(self) -> Task:
        return _spread(super().load())
