"""Tests for gradbal.objectives.bpo.

Hand examples, beta = 0.5, references -2:

* pc = -1, pr = -3, alpha = 0.5: r_w = 0.5, r_l = -0.5, -alpha r_l = 0.25 = the minimum, so
  loss = log(1 + e^-0.25) = 0.575939; only the rejected term gets gradient:
  d/d pr = -sigma(-0.25) * d(-alpha beta pr)/d pr = sigma(-0.25) * 0.25 = 0.109453, d/d pc = 0.
* pc = -1.9, pr = -3, alpha = 1: r_w = 0.05 < 0.5, loss = log(1 + e^-0.05) = 0.668460;
  d/d pc = -beta sigma(-0.05) = -0.243752, d/d pr = 0.
"""

import math

import pytest

from gradbal.objectives import BPO, bpo_loss
from tests.unit.objectives._preference_cases import grads, leaves, logps, refs


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_rejected_term_is_the_minimum() -> None:
    pc, pr = leaves()
    out = bpo_loss(pc, pr, *refs(), beta=0.5, alpha=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.25)))
    assert out.diagnostics["bpo/chosen_active"].item() == 0.0
    assert grads(out.losses, pc, pr) == pytest.approx((0.0, sigmoid(-0.25) * 0.25))


def test_chosen_term_is_the_minimum() -> None:
    pc, pr = leaves(pc=-1.9)
    out = BPO(beta=0.5, alpha=1.0)(logps(pc, pr))
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.05)))
    assert out.diagnostics["bpo/chosen_active"].item() == 1.0
    assert grads(out.losses, pc, pr) == pytest.approx((-0.5 * sigmoid(-0.05), 0.0))


@pytest.mark.parametrize("alpha", [0.0, 1.5, float("nan")])
def test_alpha_must_be_in_zero_one(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha .* must be in \(0, 1\]"):
        BPO(alpha=alpha)
