"""``Fixed``: probabilities given in the config, whatever the statistics."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradbal.weighting.base import TaskWeighting


class Fixed(TaskWeighting):
    """Constant probabilities, in task order (normalised to sum to 1).

    Not permutation-equivariant by design: the values belong to task positions, not to
    statistics.

    Args:
        probs: One finite non-negative value per task, in the DataModule's task order, with a
            positive sum.

    Raises:
        ValueError: At construction on a negative, NaN or infinite value or a zero sum; when
            called on a number of tasks different from ``len(probs)``.

    Example::

        >>> Fixed([3.0, 1.0])(torch.tensor([0.2, 0.7]))
        tensor([0.7500, 0.2500])
    """

    statistic = None

    def __init__(self, probs: list[float]):
        values = [float(p) for p in probs]
        if not values or not all(math.isfinite(p) and p >= 0 for p in values) or sum(values) <= 0:
            raise ValueError(
                f"Fixed needs one finite non-negative value per task with a positive sum. Got "
                f"{values}."
            )
        self.probs = values

    def forward(self, stats: Tensor) -> Tensor:
        if stats.numel() != len(self.probs):
            raise ValueError(
                f"{self!r} has {len(self.probs)} values but there are {stats.numel()} tasks. Give "
                "one value per task, in the DataModule's task order."
            )
        probs = torch.tensor(self.probs, dtype=torch.float64, device=stats.device)
        return probs / probs.max()  # the sum of values near 1.8e308 would overflow to inf

    def __repr__(self) -> str:
        return f"Fixed(probs={self.probs})"
