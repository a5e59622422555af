"""Tests for gradbal.objectives.ipo.

Hand example: h = 2. beta = 0.5: target 1/(2 beta) = 1, loss (2 - 1)^2 = 1, d/d pc = 2 (h - 1)
= 2, d/d pr = -2. beta = 0.25: target 2, loss 0. Per-token (IPO class): sums -2/-6 with
references -4/-4 over 2 tokens each give per-token h = (-1 + 2) - (-3 + 2) = 2 as well.
"""

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import IPO, PreferenceLogps, ipo_loss
from tests.unit.objectives._preference_cases import grads, leaves, refs


def test_hand_computed_loss_and_gradient() -> None:
    pc, pr = leaves()
    out = ipo_loss(pc, pr, *refs(), beta=0.5)
    assert out.losses.item() == pytest.approx(1.0)
    assert grads(out.losses, pc, pr) == pytest.approx((2.0, -2.0))
    assert ipo_loss(pc, pr, *refs(), beta=0.25).losses.item() == pytest.approx(0.0)


def test_class_uses_per_token_means_unless_told_not_to() -> None:
    t = torch.tensor
    logps = PreferenceLogps(t([-2.0]), t([-6.0]), t([-4.0]), t([-4.0]), t([2]), t([2]))
    assert_close(IPO(beta=0.5)(logps).losses, t([1.0]))  # per-token h = 2
    assert_close(IPO(beta=0.5, length_normalize=False)(logps).losses, t([9.0]))  # (4 - 1)^2


def test_bad_beta() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        IPO(beta=-1.0)
