"""``Uniform``: every task gets the same probability (the baseline)."""

from __future__ import annotations

import torch
from torch import Tensor

from gradbal.weighting.base import TaskWeighting


class Uniform(TaskWeighting):
    """Equal probabilities ``1 / K``, whatever the statistics (Wu et al. 2025's baseline).

    Example::

        >>> Uniform()(torch.tensor([9.0, 1.0, 0.0]))
        tensor([0.3333, 0.3333, 0.3333])
    """

    statistic = None

    def forward(self, stats: Tensor) -> Tensor:
        return torch.ones_like(stats, dtype=torch.float64)

    def __repr__(self) -> str:
        return "Uniform()"
