"""PooledGradNormMonitor: each task's unbiased ||G||^2 pooled over a window, with its s.e."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._pooled_source import PooledSource, Window
from gradbal.callbacks.statistics import StatisticSource, find_source
from gradbal.contracts import ReportsGradSums
from gradbal.gradstats import ratio_sums

#: What it pools, from the callback that provides it (TaskGradNormMonitor).
GRAD_NORM_SQ = "grad_norm_sq"


class PooledGradNormMonitor(PooledSource):
    """Pools the unbiased estimate of each task's ``||G_k||^2`` over a window, with its s.e.

    :class:`TaskGradNormMonitor` estimates ``||G_k||^2`` on each measured step as ``cross /
    pairs`` (a U-statistic over the step's pairs of groups); at a few groups per task per step
    most single-step estimates are noise, often negative. An average of those ratios (an EMA)
    weighs a step with 1 pair like one with 30. This source adds the steps' cross sums and pair
    counts over the window and divides once, ``sum_t cross_t / sum_t pairs_t``: the U-statistic
    over every within-step pair of the window, still unbiased for ``||G_k||^2`` if the gradient
    changes little over the window. Standard error: the ratio estimator's over the measured
    steps as units (:func:`gradbal.gradstats.pooled_ratio`), so a window needs ``min_units``
    (default 2) measured steps with the task. Loss weights are divided out by the monitor; the
    sums are already reduced across ranks.

    Logged (with a logger, at the end of each window): ``train/grad_norm_sq_pooled/<task>``
    and ``train/grad_norm_sq_pooled_stderr/<task>``. Rules that read ``"grad_norm_sq"`` read the
    monitor's single-step estimates; a rule of your own with ``statistic =
    "grad_norm_sq_pooled"`` reads this.

    Contract: exactly one callback provides ``"grad_norm_sq"`` and implements
    :class:`gradbal.contracts.ReportsGradSums` (:class:`TaskGradNormMonitor` does). Its measured
    steps (``measured_every_n_steps``) are this source's, so the sampling scheduler asks the
    DataModule for every task in them.

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Measured steps with the task a window needs, >= 1 (2 for a standard error).

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names, or without one ``"grad_norm_sq"``
            source, or if it does not expose its sums.

    Attributes:
        provides: ``"grad_norm_sq_pooled"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> PooledGradNormMonitor(window=100).provides
        'grad_norm_sq_pooled'
    """

    provides: ClassVar[str] = "grad_norm_sq_pooled"
    rank_local: ClassVar[bool] = False

    def __init__(self, window: Window = "epoch", min_units: int = 2):
        super().__init__(window, min_units)
        self._grad_source: StatisticSource | None = None  # also a ReportsGradSums
        self._seen = -1  # step of the last measurement pooled

    @override
    def check_module(self, trainer: Trainer, pl_module: LightningModule) -> None:
        owner = type(self).__name__
        source = find_source(trainer, GRAD_NORM_SQ, owner, f"pools {GRAD_NORM_SQ!r}")
        if not isinstance(source, ReportsGradSums):
            raise RuntimeError(
                f"{owner} pools the cross sums and pair counts of {type(source).__name__}, "
                "which does not expose them (gradbal.contracts.ReportsGradSums: a "
                "`grad_sums()` method). Use gradbal.callbacks.TaskGradNormMonitor."
            )
        self._grad_source = source

    @override
    def measured_every_n_steps(self, trainer: Trainer) -> int | None:
        source = self._grad_source
        return None if source is None else source.measured_every_n_steps(trainer)

    @override
    def collect(
        self, trainer: Trainer, pl_module: LightningModule, batch_idx: int
    ) -> Tensor | None:
        source = self._grad_source
        sums = source.grad_sums() if isinstance(source, ReportsGradSums) else None
        if sums is None or sums.step <= self._seen:
            return None
        self._seen = sums.step
        measured = sums.pairs > 0  # [K]
        tasks = torch.arange(measured.numel(), device=measured.device)[measured]
        return ratio_sums(sums.cross[measured], sums.pairs[measured], tasks, measured.numel())

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": self._seen}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._seen = int(state_dict.get("seen", -1))
