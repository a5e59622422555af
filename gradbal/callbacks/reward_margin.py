"""RewardMarginMonitor: each task's mean implicit reward margin of preference pairs (DPO)."""

from __future__ import annotations

from typing import ClassVar

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._pooled_source import PooledSource
from gradbal.callbacks._reports import batch_preferences, require_preferences
from gradbal.gradstats import ratio_sums


class RewardMarginMonitor(PooledSource):
    """Measures each task's mean implicit reward margin of preference pairs, over a window.

    The margin of a pair is ``chosen_reward - rejected_reward`` (DPO: ``beta`` times the
    difference of the policy-over-reference log-ratios, TRL's ``rewards/margins``); a task with
    a small margin is one the policy does not yet separate. Value: the mean over the window's
    pairs on every rank; standard error: their standard deviation over ``sqrt(pairs)``.

    Logged (with a logger, at the end of each window): ``train/reward_margin/<task>`` and
    ``train/reward_margin_stderr/<task>``.

    Contract with the LightningModule: :class:`gradbal.contracts.ReportsPreferences`
    (``DPOModule`` does).

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Pairs a task needs in a window to be measured, >= 1.

    Raises:
        ValueError: On a bad ``window`` or ``min_units``.
        RuntimeError: At ``setup`` without task names or a module that reports its pairs; at a
            batch whose report is stale.

    Attributes:
        provides: ``"reward_margin"``.
        measurement: The last window's :class:`Measurement`, or ``None``.

    Example::

        >>> RewardMarginMonitor().provides
        'reward_margin'
    """

    provides: ClassVar[str] = "reward_margin"

    @override
    def check_module(self, trainer: Trainer, pl_module: LightningModule) -> None:
        require_preferences(pl_module, type(self).__name__)

    @override
    def collect(
        self, trainer: Trainer, pl_module: LightningModule, batch_idx: int
    ) -> Tensor | None:
        pairs = batch_preferences(pl_module, type(self).__name__, self._batch_step, batch_idx)
        x = self.pair_value(pairs.chosen_rewards, pairs.rejected_rewards)
        return ratio_sums(x, x.new_ones(x.shape), pairs.task_ids, len(self._task_names))

    @staticmethod
    def pair_value(chosen: Tensor, rejected: Tensor) -> Tensor:
        """``[B]`` the value of each pair: its margin."""
        return chosen.double() - rejected.double()
