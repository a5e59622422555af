"""A plain classifier that also reports a synthetic GRPO rollout and DPO pairs (gradbal.contracts).

:class:`RolloutClassifier` is :class:`ThreeTaskClassifier` (whose per-prompt losses go through
``report_task_losses``) plus, per prompt, a group of ``G`` binary rewards drawn with the task's
success rate, which rises by ``DRIFT`` per optimiser step, and their group-centred advantages
(``last_rollout``), and one preference pair with normal implicit rewards, the chosen one shifted
up by the task index (``last_preferences``). Everything depends only on the step (a seeded
generator), so a resumed run sees the same numbers.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from gradbal.contracts import PreferenceReport, RolloutReport
from tests.integration._three_tasks import ThreeTaskClassifier

G = 4  # completions per prompt
RATES = (0.2, 0.5, 0.9)  # success rate per task at step 0
DRIFT = 0.08  # added per optimiser step (clamped to [0, 1])


class RolloutClassifier(ThreeTaskClassifier):
    """ThreeTaskClassifier that sets ``last_rollout`` (``ReportsRollout``) every step."""

    def __init__(self, lr: float = 0.5, rates: tuple[float, ...] = RATES):
        super().__init__(lr)
        self.rates = rates
        self.last_rollout: RolloutReport | None = None
        self.last_preferences: PreferenceReport | None = None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        task_ids = batch["task_id"]
        b = task_ids.numel()
        gen = torch.Generator().manual_seed(1000 + self.global_step)
        rate = (torch.tensor(self.rates)[task_ids] + DRIFT * self.global_step).clamp(0, 1)  # [B]
        rewards = (torch.rand(b, G, generator=gen) < rate[:, None]).float()  # [B, G]
        advantages = rewards - rewards.mean(1, keepdim=True)
        self.last_rollout = RolloutReport(
            self.global_step,
            batch_idx,
            task_ids.repeat_interleave(G),
            torch.arange(b).repeat_interleave(G),
            rewards.flatten(),
            advantages.flatten(),
        )
        chosen = torch.randn(b, generator=gen) + task_ids.float()  # [B]
        rejected = torch.randn(b, generator=gen)  # [B]
        self.last_preferences = PreferenceReport(
            self.global_step, batch_idx, task_ids.clone(), chosen, rejected
        )
        return loss


class Recorder(pl.Callback):
    """Copies each batch's rollout report and per-row loss shares (put it anywhere in the list)."""

    def __init__(self) -> None:
        self.rollouts: list[RolloutReport] = []
        self.pairs: list[PreferenceReport] = []
        self.shares: list[tuple[int, Tensor, Tensor]] = []  # (step, losses, task_ids)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        report = pl_module.last_rollout
        self.rollouts.append(report)
        self.pairs.append(pl_module.last_preferences)
        reported = pl_module.task_losses
        self.shares.append(
            (report.step, reported.losses.detach().clone(), reported.task_ids.clone())
        )
