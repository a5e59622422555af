"""RewardShortfallMonitor: how far each task is from solved, ``max_reward`` minus its mean reward."""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._group_source import GroupSource
from gradbal.callbacks._pooled_source import Window
from gradbal.gradstats import GroupSummary, ratio_sums


class RewardShortfallMonitor(GroupSource):
    """Measures each task's reward shortfall: ``max_reward`` minus its mean reward, pooled over
    a window of GRPO rollouts.

    GRPO's loss is a policy-gradient surrogate whose mean is about 0 whatever the task's
    progress, so a rule that wants "how far from solved" (Skill-it's loss,
    :class:`gradbal.weighting.SkillGraphWeights`) reads this instead: ``1 - p`` for binary
    rewards with success rate ``p``. Each window (``window`` optimiser steps, or the epoch)
    pools every group generated in it on every rank (each rollout once, also when
    ``num_iterations > 1`` reuses it). Value: ``max_reward`` minus the mean over the groups of
    the group's mean reward; standard error: the groups' standard deviation over
    ``sqrt(groups)`` (groups are independent prompts). A task with fewer than ``min_units``
    groups in the window is not valid. A task above ``max_reward`` gets a negative value, which
    the scheduler's clamp (1% of the largest) turns into "nearly solved".

    Logged (with a logger, at the end of each window): ``train/reward_shortfall/<task>`` and
    ``train/reward_shortfall_stderr/<task>``.

    Contract with the LightningModule: it implements :class:`gradbal.contracts.ReportsRollout`
    (``GRPOModule`` does).

    Args:
        window: ``"epoch"`` or a number of optimiser steps.
        min_units: Groups a task needs in a window to be measured, >= 1 (2 for a standard error).
        max_reward: The reward of a solved prompt (1 for 0/1 rewards), finite.

    Raises:
        ValueError: On a bad ``window``, ``min_units`` or ``max_reward``.
        RuntimeError: At ``setup`` without ``trainer.datamodule.task_names`` or if the module
            does not report its rollouts; at a batch whose report is stale.

    Attributes:
        provides: ``"reward_shortfall"``.
        measurement: The last window's :class:`Measurement` (``stderr`` set), or ``None``.

    Example::

        >>> monitor = RewardShortfallMonitor(window=20)
        >>> monitor.provides, monitor.task_metric_groups
        ('reward_shortfall', ('train/reward_shortfall', 'train/reward_shortfall_stderr'))
    """

    provides: ClassVar[str] = "reward_shortfall"

    def __init__(self, window: Window = "epoch", min_units: int = 2, max_reward: float = 1.0):
        super().__init__(window, min_units)
        if not math.isfinite(max_reward):
            raise ValueError(
                "F09: RewardShortfallMonitor needs a finite `max_reward` (the reward of a solved "
                f"prompt: 1 for 0/1 rewards). Got {max_reward}."
            )
        self.max_reward = max_reward

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            window=self.window, min_units=self.min_units, max_reward=self.max_reward
        )

    @override
    def group_sums(self, groups: GroupSummary) -> Tensor:
        ones = groups.size.new_ones(groups.size.shape)
        return ratio_sums(groups.reward_mean, ones, groups.task_ids, len(self._task_names))

    @override
    def finish(
        self, values: Tensor, stderr: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.max_reward - values, stderr, valid
