"""Per-pair preference metrics, and their per-task epoch means for validation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from gradbal.contracts import trainer_of
from gradbal.metric_names import (
    LOGPS_CHOSEN,
    LOGPS_REJECTED,
    REWARDS_ACCURACIES,
    REWARDS_CHOSEN,
    REWARDS_MARGINS,
    REWARDS_REJECTED,
    Stage,
    metric_name,
)
from gradbal.modules._task_metrics import per_task_sums
from gradbal.objectives import PreferenceLogps, PreferenceLoss, PreferenceObjective

#: The groups :func:`pair_metrics` returns before the objective's diagnostics.
PAIR_GROUPS = (
    REWARDS_CHOSEN,
    REWARDS_REJECTED,
    REWARDS_MARGINS,
    REWARDS_ACCURACIES,
    LOGPS_CHOSEN,
    LOGPS_REJECTED,
)


def pair_metrics(out: PreferenceLoss, logps: PreferenceLogps) -> dict[str, Tensor]:
    """``{group: [B] detached}``: TRL's rewards/logps groups plus the objective's diagnostics."""
    chosen, rejected = out.chosen_rewards, out.rejected_rewards  # [B], [B]
    return {
        REWARDS_CHOSEN: chosen,
        REWARDS_REJECTED: rejected,
        REWARDS_MARGINS: chosen - rejected,
        REWARDS_ACCURACIES: (chosen > rejected).float(),
        LOGPS_CHOSEN: logps.policy_chosen_logps.detach(),
        LOGPS_REJECTED: logps.policy_rejected_logps.detach(),
        **out.diagnostics,
    }


def check_diagnostics(objective: PreferenceObjective, out: PreferenceLoss) -> None:
    """Raise unless the objective returned exactly the diagnostics it declares."""
    declared, got = tuple(objective.diagnostic_names), tuple(out.diagnostics)
    if set(declared) != set(got):
        raise ValueError(
            f"{objective!r} returned the diagnostics {list(got)} but declares "
            f"diagnostic_names={list(declared)}. Per-task metrics are sized from the declaration "
            f"before the first batch: give {type(objective).__name__} a `diagnostic_names` "
            "property that returns the keys its PreferenceLoss.diagnostics holds."
        )


class TaskMeans(nn.Module):
    """Per-task sums and counts of fixed groups over an epoch; reduced across ranks, then divided.

    Logs ``<stage>/<group>/<task>`` and ``<stage>/<group>``, the unweighted mean over the tasks
    seen (every task counts the same, as ``val/accuracy`` does).
    """

    sums: Tensor  # [G, 2, K] per-group, per-task sums and counts (a non-persistent buffer)

    def __init__(self, groups: Sequence[str], task_names: Sequence[str]):
        super().__init__()
        self.groups = list(groups)
        self.task_names = list(task_names)
        self.register_buffer(
            "sums", torch.zeros(len(self.groups), 2, len(self.task_names)), persistent=False
        )

    def update(self, values: dict[str, Tensor], task_ids: Tensor) -> None:
        k = len(self.task_names)
        stacked = torch.stack([per_task_sums(values[g], task_ids, k) for g in self.groups])
        self.sums += stacked.to(self.sums)  # [G, 2, K]

    def log_and_reset(self, module: LightningModule, stage: Stage) -> dict[str, float]:
        sums = self.sums
        trainer = trainer_of(module)
        if trainer is not None and trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums.clone(), reduce_op="sum")
        results: dict[str, float] = {}
        for group, (total, count) in zip(self.groups, sums, strict=True):
            seen = count > 0  # [K]
            if not seen.any():
                continue
            means = total[seen] / count[seen]  # [K_seen]
            results[metric_name(stage, group)] = float(means.mean())
            for name, value in zip(
                [n for n, s in zip(self.task_names, seen.tolist(), strict=True) if s],
                means.tolist(),
                strict=True,
            ):
                results[metric_name(stage, group, name)] = value
        self.sums.zero_()
        for name, value in results.items():
            module.log(name, value, on_step=False, on_epoch=True, sync_dist=False)
        return results
