"""Three synthetic classification tasks and a plain LightningModule that is not gradbal's.

The module is what a user of another Lightning project writes: a small classifier whose only
gradbal-specific line is ``return report_task_losses(self, losses, task_ids)``. The tasks are
gradbal ``TaskSource``s whose rows carry features ``x`` and a label ``y`` as extra columns, so
the resumable ``MultiTaskDataModule`` can mix them. Their inputs have different scales, hence
different gradient norms.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from datasets import Dataset
from torch import Tensor, nn

from gradbal import report_task_losses
from gradbal.tasks import Task

NAMES = ("small", "medium", "large")
SCALES = (0.3, 1.0, 4.0)
DIM = 6


def _no_reward(prompts: list[str], completions: list[str], **columns: list[Any]) -> list[float]:
    return [0.0] * len(prompts)


class SyntheticTask:
    """Linearly separable points, scaled by ``scale``, labelled by a task-specific direction."""

    def __init__(self, name: str, scale: float, seed: int, rows: int = 96):
        self.name, self.scale, self.seed, self.rows = name, scale, seed, rows

    def load(self) -> Task:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.rows, DIM, generator=g) * self.scale
        direction = torch.randn(DIM, generator=g)
        y = (x @ direction > 0).long()
        split = Dataset.from_dict(
            {
                "prompt": [f"{self.name} {i}" for i in range(self.rows)],
                "answer": [str(int(v)) for v in y],
                "x": x.tolist(),
                "y": y.tolist(),
            }
        )
        return Task(self.name, train=split, validation=split.select(range(4)), reward=_no_reward)


def synthetic_tasks() -> list[SyntheticTask]:
    return [SyntheticTask(n, s, seed=i) for i, (n, s) in enumerate(zip(NAMES, SCALES, strict=True))]


class ThreeTaskClassifier(pl.LightningModule):
    """A plain classifier; logs ``train/accuracy/<task>`` (global means) for LearningGainMonitor."""

    def __init__(self, lr: float = 0.5):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, 2))
        self.lr = lr

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        x = torch.tensor([row["x"] for row in batch["columns"]], dtype=torch.float32)
        y = torch.tensor([row["y"] for row in batch["columns"]])
        task_ids = batch["task_id"]
        logits = self.net(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none") / len(y)
        self._log_accuracy((logits.argmax(1) == y).float(), task_ids)
        return report_task_losses(self, losses, task_ids)

    def _log_accuracy(self, correct: Tensor, task_ids: Tensor) -> None:
        sums = torch.zeros(2, len(NAMES))
        sums[0].index_add_(0, task_ids, correct)
        sums[1].index_add_(0, task_ids, torch.ones_like(correct))
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        for t, name in enumerate(NAMES):
            if sums[1, t] > 0:
                self.log(
                    f"train/accuracy/{name}", sums[0, t] / sums[1, t], on_step=True, on_epoch=False
                )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)
