"""``LearnabilityProportional``: more samples to tasks whose groups still disagree on the reward."""

from __future__ import annotations

from torch import Tensor

from gradbal.weighting.base import TaskWeighting, check_power, power_probs


class LearnabilityProportional(TaskWeighting):
    """Probabilities proportional to each task's learnability to the power ``power``.

    Reads the ``"learnability"`` statistic: per task, the mean over its groups of the
    within-group reward variance, ``p (1 - p)`` for binary rewards with group success rate ``p``
    (issue 15). A task whose groups are all-correct or all-wrong has learnability 0: GRPO's
    advantages are 0 there, so it costs generation and teaches nothing; a task near ``p = 1/2``
    has the largest. The idea is the "learnability" sampling of Foster & Foerster 2025
    ("Learning to Reason at the Frontier of Learnability", arXiv:2502.12272), who sample prompts
    by ``p (1 - p)``; applying it per task (not per prompt) and as a power is gradbal's
    reconstruction, not theirs. The calling callback's ``floor`` keeps every task sampled.

    Args:
        power: Exponent on the learnability, > 0 (``power > 1`` sharpens).

    Raises:
        ValueError: If ``power`` is not finite and positive.

    Example::

        >>> import torch
        >>> LearnabilityProportional()(torch.tensor([0.25, 0.09, 0.0]))  # p = 1/2, 0.9, 1
        tensor([0.7353, 0.2647, 0.0000])
    """

    statistic = "learnability"

    def __init__(self, power: float = 1.0):
        check_power("LearnabilityProportional", power)
        self.power = power

    def forward(self, stats: Tensor) -> Tensor:
        return power_probs(stats, self.power)

    def __repr__(self) -> str:
        return f"LearnabilityProportional(power={self.power})"
