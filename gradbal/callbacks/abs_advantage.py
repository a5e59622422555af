"""MeanAbsAdvantageMonitor: each task's mean |advantage| per completion, pooled over a window."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._group_source import GroupSource
from gradbal.gradstats import GroupSummary, ratio_sums


class MeanAbsAdvantageMonitor(GroupSource):
    """Measures each task's mean absolute advantage per completion, pooled over a window.

    The absolute-advantage curricula of RL post-training favour prompts whose completions' mean
    ``|A|`` is large: their policy gradient has the most weight. Value: ``sum |A| / completions``
    over the window's groups (every rank, each rollout once); standard error: the ratio
    estimator's with groups as units (a group's completions are not independent), see
    :func:`gradbal.gradstats.pooled_ratio`. It depends on the advantage scaling
    (``GRPOModule(scale_rewards=...)``): with ``"group"`` every informative group's ``|A|`` is
    about 1 whatever its reward spread.

    Logged (with a logger, at the end of each window): ``train/mean_abs_advantage/<task>`` and
    ``train/mean_abs_advantage_stderr/<task>`` (GRPOModule's per-step
    ``train/abs_advantage/<task>`` is another key).

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsRollout`.

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names or a module that reports rollouts; at a
            batch whose report is stale.

    Attributes:
        provides: ``"mean_abs_advantage"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> MeanAbsAdvantageMonitor().provides
        'mean_abs_advantage'
    """

    provides: ClassVar[str] = "mean_abs_advantage"

    @override
    def group_sums(self, groups: GroupSummary) -> Tensor:
        k = len(self._task_names)
        return ratio_sums(groups.abs_advantage_sum, groups.size, groups.task_ids, k)
