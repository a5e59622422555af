"""LossRatioMonitor: each task's loss now over its loss in the first window, ``L(t) / L(0)``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks.excess_loss import ExcessLossMonitor


class LossRatioMonitor(ExcessLossMonitor):
    """Measures each task's loss ratio ``L_i(t) / L_i(0)``: its pooled training loss in the
    current window over the one in its first measured window.

    GradNorm (Chen et al. 2018, arXiv:1711.02257, Sec. 3.1) calls it the inverse training rate
    ``L~_i``; :class:`gradbal.weighting.GradNormTarget` reads it as ``"loss_ratio"``. The
    baseline is :class:`ExcessLossMonitor`'s (the first window in which the task is valid,
    reported as not measured; same pooling as :class:`TaskLossMonitor`), so it costs no extra
    forward. Standard error by the delta method for a ratio of independent windows:
    ``R sqrt((se / L)^2 + (se_0 / L_0)^2)``. A task whose baseline loss is <= 0 is not valid
    (the ratio would mean nothing): use a loss that measures progress (DPO, SFT), not GRPO's
    surrogate.

    Logged (with a logger, at the end of each window): ``train/loss_ratio/<task>`` and
    ``train/loss_ratio_stderr/<task>``.

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsTaskLosses`.

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: As :class:`TaskLossMonitor`.

    Attributes:
        provides: ``"loss_ratio"``.
        baseline: ``[K]`` float64, each task's first-window loss (NaN until measured).

    Example::

        >>> LossRatioMonitor(window=20).provides
        'loss_ratio'
    """

    provides: ClassVar[str] = "loss_ratio"

    @override
    def finish(
        self, values: Tensor, stderr: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        _, _, valid = super().finish(values, stderr, valid)  # fixes the baselines
        assert self.baseline is not None and self._baseline_se is not None
        base, base_se = self.baseline, self._baseline_se
        ratio = values / base
        se = ratio.abs() * ((stderr / values) ** 2 + (base_se / base) ** 2).sqrt()
        return ratio, se, valid & (base > 0) & torch.isfinite(ratio)
