"""LearningProgressMonitor: the slope of each task's reward over a window (absolute or signed)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._group_source import GroupSource
from gradbal.callbacks._pooled_source import Window
from gradbal.gradstats import SLOPE_SUMS, GroupSummary, PooledEstimate, pooled_slope, slope_sums


class LearningProgressMonitor(GroupSource):
    """Measures each task's reward learning progress: the absolute least-squares slope of its
    reward against the optimiser step, over a window.

    Every group generated in the window (every rank, each rollout once) is a point ``(t, y)``:
    ``t`` the optimiser step it was generated at (counted from the window's start), ``y`` its
    mean reward. The slope is in reward per optimiser step; its standard error is the
    regression's, ``sqrt(SSR / (n - 2) / S_tt)`` (groups as independent points). The absolute
    value is the reward of the absolute-learning-progress curricula (a task whose reward moves,
    up or down, is where training acts) and of :class:`gradbal.weighting.LearningProgressBandit`
    (``"learning_progress"``); :class:`SignedLearningProgressMonitor` keeps the sign
    (``"learning_progress_signed"``). A window needs groups from at least 2 steps.

    Not importance-weighted: EXP3 divides the reward of the arm drawn by its probability
    (:func:`gradbal.weighting.importance_weighted_reward`) because it observes one arm per
    round; a window here observes every task drawn in it, each pooled over its own groups.

    Logged (with a logger, at the end of each window): ``train/learning_progress/<task>`` and
    ``train/learning_progress_stderr/<task>`` (``learning_progress_signed`` for the signed one).

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsRollout`.

    Args:
        window: ``"epoch"`` or a number of optimiser steps (>= 2 for a slope).
        min_units: Groups a task needs in a window to be measured, >= 1 (3, the default, for a
            standard error).

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names or a module that reports rollouts; at a
            batch whose report is stale.

    Attributes:
        provides: ``"learning_progress"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> LearningProgressMonitor(window=20).provides
        'learning_progress'
    """

    provides: ClassVar[str] = "learning_progress"
    num_sums: ClassVar[int] = SLOPE_SUMS
    signed: ClassVar[bool] = False

    def __init__(self, window: Window = "epoch", min_units: int = 3):
        super().__init__(window, min_units)

    @override
    def group_sums(self, groups: GroupSummary) -> Tensor:
        t = torch.full_like(groups.reward_mean, float(self._batch_step - self._window_start))
        return slope_sums(t, groups.reward_mean, groups.task_ids, len(self._task_names))

    @override
    def estimate(self, sums: Tensor) -> PooledEstimate:
        est = pooled_slope(sums)
        return est if self.signed else est._replace(values=est.values.abs())


class SignedLearningProgressMonitor(LearningProgressMonitor):
    """:class:`LearningProgressMonitor` with the sign kept: ``"learning_progress_signed"``
    (negative where the task's reward falls, e.g. forgetting).

    Example::

        >>> SignedLearningProgressMonitor().task_metric_groups[0]
        'train/learning_progress_signed'
    """

    provides: ClassVar[str] = "learning_progress_signed"
    signed: ClassVar[bool] = True
