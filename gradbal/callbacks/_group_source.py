"""What every rollout statistic source shares: it reads the groups of each new rollout (private).

``LearnabilityMonitor``, ``NonZeroAdvantageMonitor``, ``MeanAbsAdvantageMonitor`` and
``LearningProgressMonitor`` differ only in how a rollout's groups become per-task sums
(:meth:`GroupSource.group_sums`); reading the module's report, refusing a module without one, and
counting a rollout reused by ``num_iterations`` once are here.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._pooled_source import PooledSource
from gradbal.callbacks._reports import new_groups, require_rollouts
from gradbal.gradstats import GroupSummary


class GroupSource(PooledSource):
    """A :class:`PooledSource` over the groups of the module's ``last_rollout``
    (:class:`gradbal.contracts.ReportsRollout`): a subclass implements :meth:`group_sums`."""

    def group_sums(self, groups: GroupSummary) -> Tensor:
        """``[S, K]`` sums of one new rollout's groups (``self._batch_step`` is its step)."""
        raise NotImplementedError(f"{type(self).__name__} must implement group_sums(groups).")

    @override
    def check_module(self, trainer: Trainer, pl_module: LightningModule) -> None:
        require_rollouts(pl_module, type(self).__name__)

    @override
    def collect(
        self, trainer: Trainer, pl_module: LightningModule, batch_idx: int
    ) -> Tensor | None:
        groups = new_groups(pl_module, type(self).__name__, self._batch_step, batch_idx)
        return None if groups is None else self.group_sums(groups)
