"""``LearningGainProportional``: more samples to tasks whose training reward is rising fastest."""

from __future__ import annotations

from torch import Tensor

from gradbal.weighting.base import TaskWeighting, check_power, power_probs


class LearningGainProportional(TaskWeighting):
    """Probabilities proportional to each task's learning gain to the power ``power``.

    Reads learning gains (Wu et al. 2025, arXiv:2510.19178, §3.1: mean training reward over the
    next ``s`` steps minus over the previous ``s``, from ``LearningGainMonitor``), which the
    calling callback clamps to at least 1% of the largest first (a task that stopped improving
    keeps little more than the callback's ``floor``). Where the gradient rules bet on gradient
    size, this one bets on measured progress, which the paper finds gradient size does not
    predict.

    Args:
        power: Exponent on the gain, > 0.

    Raises:
        ValueError: If ``power`` is not finite and positive.

    Example::

        >>> import torch
        >>> LearningGainProportional()(torch.tensor([0.03, 0.01]))
        tensor([0.7500, 0.2500])
    """

    statistic = "learning_gain"

    def __init__(self, power: float = 1.0):
        check_power("LearningGainProportional", power)
        self.power = power

    def forward(self, stats: Tensor) -> Tensor:
        return power_probs(stats, self.power)

    def __repr__(self) -> str:
        return f"LearningGainProportional(power={self.power})"
