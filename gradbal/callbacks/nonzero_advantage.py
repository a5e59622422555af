"""NonZeroAdvantageMonitor: each task's share of groups that carry a policy gradient."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._group_source import GroupSource
from gradbal.gradstats import GroupSummary, ratio_sums


class NonZeroAdvantageMonitor(GroupSource):
    """Measures each task's share of groups with a non-zero advantage, pooled over a window.

    A group has a non-zero advantage when its completions' rewards are not all equal (then, with
    any advantage scaling, some advantage is not 0 and the group carries a policy gradient);
    DAPO's dynamic sampling drops the others. A task near 0 is saturated (all correct) or out of
    reach (all wrong). Value: the share over the window's groups (every rank, each rollout
    once); standard error: the binomial ``sqrt(q (1 - q) / (groups - 1))`` of the pooled share.

    Logged (with a logger, at the end of each window): ``train/nonzero_advantage_share/<task>``
    and ``train/nonzero_advantage_share_stderr/<task>``.

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsRollout`.

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names or a module that reports rollouts; at a
            batch whose report is stale.

    Attributes:
        provides: ``"nonzero_advantage_share"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> NonZeroAdvantageMonitor(window=10).provides
        'nonzero_advantage_share'
    """

    provides: ClassVar[str] = "nonzero_advantage_share"

    @override
    def group_sums(self, groups: GroupSummary) -> Tensor:
        ones = groups.size.new_ones(groups.size.shape)
        share = groups.informative.to(groups.size.dtype)
        return ratio_sums(share, ones, groups.task_ids, len(self._task_names))
