"""LearnabilityProportional: hand-worked numbers (the shared properties are in test_properties.py)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gradbal.weighting import LearnabilityProportional


def test_learnability_proportional_numbers() -> None:
    # Group success rates 1/2, 0.9 and 1 (all correct): p(1-p) = 0.25, 0.09, 0.
    stats = torch.tensor([0.25, 0.09, 0.0], dtype=torch.float64)
    assert_close(LearnabilityProportional()(stats), torch.tensor([0.25, 0.09, 0.0]).double() / 0.34)
    squared = torch.tensor([0.0625, 0.0081, 0.0], dtype=torch.float64)
    assert_close(LearnabilityProportional(power=2.0)(stats), squared / squared.sum())
