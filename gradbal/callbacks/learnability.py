"""LearnabilityMonitor: each task's mean within-group reward variance, pooled over a window."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._group_source import GroupSource
from gradbal.gradstats import GroupSummary, ratio_sums


class LearnabilityMonitor(GroupSource):
    """Measures each task's learnability: the mean over its groups of the within-group reward
    variance, ``p (1 - p)`` for binary rewards with group success rate ``p``.

    A group whose completions all get the same reward has advantage 0 everywhere: it costs
    generation and teaches nothing, and its learnability is 0. Foster & Foerster 2025
    (arXiv:2502.12272) sample prompts by ``p (1 - p)``; this is its per-task mean, what
    :class:`gradbal.weighting.LearnabilityProportional` reads.

    Each window (``window`` optimiser steps, or the epoch) pools every group generated in it on
    every rank (each rollout once, also when ``num_iterations > 1`` reuses it). Value: the mean
    of the groups' variances; standard error: their standard deviation over ``sqrt(groups)``
    (groups are independent prompts). A task with fewer than ``min_units`` groups in the window
    is not valid.

    Logged (with a logger, at the end of each window): ``train/learnability/<task>`` and
    ``train/learnability_stderr/<task>``.

    Contract with the LightningModule: it implements :class:`gradbal.contracts.ReportsRollout`
    (``GRPOModule`` does).

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1 (2 for a standard error).

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without ``trainer.datamodule.task_names`` or if the module
            does not report its rollouts; at a batch whose report is stale.

    Attributes:
        provides: ``"learnability"``.
        measurement: The last window's :class:`Measurement` (``stderr`` set), or ``None``.

    Example::

        >>> monitor = LearnabilityMonitor(window=20)
        >>> monitor.provides, monitor.task_metric_groups
        ('learnability', ('train/learnability', 'train/learnability_stderr'))
    """

    provides: ClassVar[str] = "learnability"

    @override
    def group_sums(self, groups: GroupSummary) -> Tensor:
        ones = groups.size.new_ones(groups.size.shape)
        return ratio_sums(groups.reward_var, ones, groups.task_ids, len(self._task_names))
