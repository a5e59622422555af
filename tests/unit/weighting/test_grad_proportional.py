"""GradProportional: hand-worked numbers (the shared properties are in test_properties.py)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gradbal.weighting import GradProportional


def test_grad_proportional_numbers() -> None:
    sq = torch.tensor([1.0, 4.0, 16.0], dtype=torch.float64)  # norms 1, 2, 4
    assert_close(GradProportional()(sq), sq / sq.sum())  # p ∝ ||G||^2
    assert_close(GradProportional(power=1.0)(sq), torch.tensor([1.0, 2.0, 4.0]).double() / 7)
    assert GradProportional()(torch.tensor([0.0, 2.0])).tolist() == [0.0, 1.0]
