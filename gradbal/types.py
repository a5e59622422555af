"""Small shared data types passed between gradbal's modules, callbacks and statistics."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class TaskLosses(NamedTuple):
    """Each sample's additive share of one training step's loss, with its task and group.

    Every gradbal LightningModule sets ``self.task_losses`` to one of these inside
    ``training_step``, before it returns the loss, through :func:`gradbal.report_task_losses`
    (which also applies the module's task loss weights: ``losses`` are then the weighted shares). Callbacks use it to split the update by task:
    the gradient of ``losses[task_ids == k].sum()`` is task ``k``'s share of the gradient of the
    step's loss (for token-normalised losses the shared normaliser is a constant).

    Attributes:
        losses: ``[N]`` float, in the autograd graph; ``losses.sum()`` equals the step's loss.
        task_ids: ``[N]`` long, index into the DataModule's ``task_names``.
        group_ids: ``[N]`` long; samples with equal group id are not independent draws (the
            completions of one GRPO prompt). An unbiased split of a task's samples into halves
            must keep each group whole.
        step: The training batch the report belongs to (Lightning's running batch count,
            ``trainer.fit_loop.total_batch_idx``), or ``-1`` when reported outside a fit. A
            reader compares it with the last one it saw to tell a fresh report from a stale one.
        parts: ``[N]`` long or ``None``: a split of the rows a monitor needs beside the tasks.
            ``DPOModule`` marks the rejected completions' rows with 1 and the chosen ones' with 0,
            which ``PreferenceGradientMonitor`` reads.
    """

    losses: Tensor
    task_ids: Tensor
    group_ids: Tensor
    step: int = -1
    parts: Tensor | None = None
