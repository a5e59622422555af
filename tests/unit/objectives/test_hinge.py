"""Tests for gradbal.objectives.hinge.

Hand example: beta = 0.25. h = 2: 1 - 0.5 = 0.5, d/d pc = -beta = -0.25, d/d pr = +0.25.
h = 8: 1 - 2 < 0, loss 0 and no gradient.
"""

import pytest
import torch

from gradbal.objectives import Hinge, hinge_loss
from tests.unit.objectives._preference_cases import grads, leaves, logps, refs


def test_active_margin() -> None:
    pc, pr = leaves()
    out = hinge_loss(pc, pr, *refs(), beta=0.25)
    assert out.losses.item() == pytest.approx(0.5)
    assert grads(out.losses, pc, pr) == pytest.approx((-0.25, 0.25))


def test_satisfied_margin_has_no_gradient() -> None:
    pc, pr = leaves(pr=-9.0)  # h = 8
    out = Hinge(beta=0.25)(logps(pc, pr))
    assert out.losses.item() == 0.0
    assert grads(out.losses, pc, pr) == (0.0, 0.0)


def test_bad_beta() -> None:
    with pytest.raises(ValueError, match="beta must be > 0"):
        hinge_loss(*[torch.zeros(1)] * 4, beta=0.0)
