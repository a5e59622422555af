"""TaskLossMonitor: each task's training loss per row, pooled over a window."""

from __future__ import annotations

from typing import ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._pooled_source import PooledSource
from gradbal.contracts import ReportsTaskLosses
from gradbal.gradstats import group_totals, ratio_sums
from gradbal.task_losses import task_loss_weights


class TaskLossMonitor(PooledSource):
    """Measures each task's training loss per row, pooled over a window, with its s.e.

    Read from the module's :class:`gradbal.types.TaskLosses` of every backward (so a step the
    module skipped, e.g. a non-finite loss, does not count): row ``i``'s loss is ``N`` times its
    share ``losses[i]`` (``N`` rows in the micro-batch), with the task loss weights divided out.
    For a loss that is a mean over rows (DPO, SFT's sequence mean) that is exactly row ``i``'s
    loss; for a token mean over the batch it is the row's token-loss sum over the mean tokens
    per row. Value: ``sum of row losses / rows`` over the window's groups on every rank;
    standard error: the ratio estimator's with groups as units
    (:func:`gradbal.gradstats.pooled_ratio`). A GRPO loss is a policy-gradient surrogate whose
    mean is about 0 whatever the task's progress: use this with DPO or SFT.

    Logged (with a logger, at the end of each window): ``train/task_loss/<task>`` and
    ``train/task_loss_stderr/<task>`` (the modules' per-step ``train/loss/<task>`` is another
    key).

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsTaskLosses`
    (``report_task_losses`` sets it; every gradbal module does).

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names; at a backward where the module has not
            set ``task_losses``.

    Attributes:
        provides: ``"task_loss"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> TaskLossMonitor(window=50).state_key
        "TaskLossMonitor{'window': 50, 'min_units': 2}"
    """

    provides: ClassVar[str] = "task_loss"

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: Tensor
    ) -> None:
        # Checked here, not at setup: report_task_losses sets the attribute in the first step.
        reported = pl_module.task_losses if isinstance(pl_module, ReportsTaskLosses) else None
        if reported is None:
            raise RuntimeError(
                f"{type(self).__name__} reads each row's loss from `task_losses`, which "
                f"{type(pl_module).__name__} did not set in this step. In training_step, return "
                "`gradbal.report_task_losses(self, losses, task_ids, group_ids)`."
            )
        shares = reported.losses.detach().to(torch.float64)  # [N]
        weights = task_loss_weights(pl_module)
        keep = torch.ones_like(shares, dtype=torch.bool)
        if weights is not None:  # a weight-0 task has no loss to read: its rows are skipped
            w = weights.to(shares)[reported.task_ids]  # [N]
            keep = w > 0
            shares = torch.where(keep, shares / torch.where(keep, w, 1.0), 0.0)
        task, size, total = group_totals(
            shares[keep] * shares.numel(), reported.task_ids[keep], reported.group_ids[keep]
        )
        self.add(ratio_sums(total, size, task, len(self._task_names)))
