"""LearningGainProportional: hand-worked numbers (the shared properties are in test_properties.py)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gradbal.weighting import LearningGainProportional


def test_learning_gain_proportional_numbers() -> None:
    assert_close(
        LearningGainProportional()(torch.tensor([0.1, 0.3, 0.0], dtype=torch.float64)),
        torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64),
    )
