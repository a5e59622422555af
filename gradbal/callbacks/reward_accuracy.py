"""RewardAccuracyMonitor: each task's share of pairs ranked right by the implicit reward (DPO)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from gradbal.callbacks.reward_margin import RewardMarginMonitor


class RewardAccuracyMonitor(RewardMarginMonitor):
    """Measures each task's reward accuracy: the share of pairs whose chosen completion has the
    larger implicit reward (TRL's ``rewards/accuracies``), pooled over a window; standard error
    ``sqrt(q (1 - q) / (pairs - 1))``. As :class:`RewardMarginMonitor` otherwise.

    Logged: ``train/reward_accuracy/<task>`` and ``train/reward_accuracy_stderr/<task>``.

    Example::

        >>> RewardAccuracyMonitor().provides
        'reward_accuracy'
    """

    provides: ClassVar[str] = "reward_accuracy"

    @staticmethod
    def pair_value(chosen: Tensor, rejected: Tensor) -> Tensor:
        """``[B]`` 1.0 where the chosen completion's reward is larger, else 0.0."""
        return (chosen > rejected).to(chosen.dtype)
