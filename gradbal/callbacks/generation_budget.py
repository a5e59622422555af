"""``GenerationBudget``: stop a GRPO run once it has generated a given number of completions.

Generation is most of a GRPO step, so runs that differ in how many completions a step generates
(DAPO's dynamic sampling refills dropped groups; a larger group size; a different batch) are
compared at equal compute by capping completions, not steps. The count is global (summed over
data-parallel ranks), counts every generated completion once (a rollout reused by
``num_iterations`` is not counted again; groups that dynamic sampling filtered out are), and is
in the callback's checkpoint state, so a resumed run stops where the uninterrupted one does.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from gradbal.callbacks._reports import batch_rollout, require_rollouts
from gradbal.step_metrics import log_step_metrics

__all__ = ["GenerationBudget"]


class GenerationBudget(Callback):
    """Stop training at the first optimiser step after ``max_completions`` were generated.

    Reads the module's ``last_rollout`` (:class:`gradbal.contracts.RolloutReport`, set by
    ``GRPOModule``): its ``generated`` field (completions generated for the rollout, filtered
    groups included), or one completion per row when the module leaves it ``None``. The run
    stops at the end of the accumulation window in which the total reaches the budget (never
    between micro-batches of one optimiser step), so it can overshoot by at most one step's
    completions; ``trainer.max_steps`` still applies. Logs ``train/completions_generated``.

    Args:
        max_completions: The budget, >= 1: total completions over all ranks.

    Raises:
        ValueError: On ``max_completions < 1``.
        RuntimeError: At ``setup``, if the module does not report its rollouts.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: gradbal.callbacks.GenerationBudget
              init_args: {max_completions: 51200}   # 800 steps x 8 prompts x 8 completions
    """

    def __init__(self, max_completions: int):
        if not isinstance(max_completions, int) or max_completions < 1:
            raise ValueError(
                f"GenerationBudget(max_completions=...) must be an int >= 1 (total completions "
                f"over all ranks), got {max_completions!r}. For steps x prompts x completions "
                "per prompt, e.g. 800 x 8 x 8, write 51200."
            )
        self.max_completions = max_completions
        self.generated = 0  # global, identical on every rank
        self._batch_step = -1
        self._logging = True

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(max_completions=self.max_completions)

    @property
    def exhausted(self) -> bool:
        return self.generated >= self.max_completions

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            require_rollouts(pl_module, "GenerationBudget")
            self._logging = bool(trainer.loggers)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        report = batch_rollout(pl_module, "GenerationBudget", self._batch_step, batch_idx)
        local = 0
        if report.new:
            local = report.task_ids.numel() if report.generated is None else report.generated
        count = torch.tensor(float(local), dtype=torch.float64, device=pl_module.device)
        self.generated += int(trainer.strategy.reduce(count, reduce_op="sum").item())
        stepped = trainer.global_step > self._batch_step
        if stepped and self._logging:
            log_step_metrics(pl_module, {"train/completions_generated": float(self.generated)})
        if stepped and self.exhausted:
            trainer.should_stop = True

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.exhausted:  # resumed after the budget was spent
            trainer.should_stop = True

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"generated": self.generated}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generated = int(state_dict["generated"])
