"""ExcessLossMonitor: each task's loss now minus its loss in the first window (the start)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._pooled_source import Window
from gradbal.callbacks.task_loss import TaskLossMonitor


class ExcessLossMonitor(TaskLossMonitor):
    """Measures each task's excess loss over the starting policy: its pooled training loss in
    the current window minus the one in its first measured window.

    DoReMi (Xie et al. 2023, arXiv:2305.10429) weights domains by the excess of the trained
    model's loss over a reference model's; :class:`gradbal.weighting.ExcessLossWeights` reads it
    as ``"excess_loss"``. Here the reference is the policy at the start of training, and its
    loss is *measured* rather than recomputed: the first window in which a task is valid fixes
    its baseline (the loss of :class:`TaskLossMonitor`, same pooling), and each later window
    reports ``loss - baseline`` with standard error ``sqrt(se^2 + se_baseline^2)`` (independent
    windows). The baseline window itself reports the task as not measured. So the statistic
    costs no extra forward, and for DPO, whose loss starts at ``log 2`` for every pair (policy =
    reference), the baseline is that start up to the drift within the first window: keep the
    first window short (``window`` in steps) when the rule reads it. Negative values (a task
    already better than at the start) are left to the scheduler's clamp. The baselines are in
    :meth:`state_dict`.

    Logged (with a logger, at the end of each window): ``train/excess_loss/<task>`` and
    ``train/excess_loss_stderr/<task>``.

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsTaskLosses`; the loss
    should measure progress (DPO, SFT; not GRPO's surrogate, see :class:`TaskLossMonitor`).

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: As :class:`TaskLossMonitor`.

    Attributes:
        provides: ``"excess_loss"``.
        baseline: ``[K]`` float64, each task's first-window loss (NaN until measured).

    Example::

        >>> ExcessLossMonitor(window=20).provides
        'excess_loss'
    """

    provides: ClassVar[str] = "excess_loss"

    def __init__(self, window: Window = "epoch", min_units: int = 2):
        super().__init__(window, min_units)
        self.baseline: Tensor | None = None
        self._baseline_se: Tensor | None = None

    @override
    def finish(
        self, values: Tensor, stderr: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if self.baseline is None or self._baseline_se is None:
            self.baseline = torch.full_like(values, float("nan"))
            self._baseline_se = torch.full_like(values, float("nan"))
        first = valid & torch.isnan(self.baseline)
        self.baseline = torch.where(first, values, self.baseline)
        self._baseline_se = torch.where(first, stderr, self._baseline_se)
        excess = values - self.baseline
        se = (stderr**2 + self._baseline_se**2).sqrt()
        return excess, se, valid & ~first

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["baseline"] = None if self.baseline is None else self.baseline.tolist()
        state["baseline_se"] = None if self._baseline_se is None else self._baseline_se.tolist()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        base, se = state_dict.get("baseline"), state_dict.get("baseline_se")
        self.baseline = None if base is None else torch.tensor(base, dtype=torch.float64)
        self._baseline_se = None if se is None else torch.tensor(se, dtype=torch.float64)
