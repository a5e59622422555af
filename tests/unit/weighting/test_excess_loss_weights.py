"""ExcessLossWeights: DoReMi's multiplicative-weights step by hand."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from gradbal.weighting import ExcessLossWeights


def test_doremi_step_by_hand() -> None:
    """From uniform weights, one step of alpha' = alpha exp(eta lambda), normalised, smoothed:
    the rule on lambda / max(lambda) with the same eta gives the same vector."""
    excess = [0.5, 2.0, 0.0]
    eta, c = 1.5, 0.1
    scaled = [x / max(excess) for x in excess]
    alpha = [math.exp(eta * x) / 3 for x in scaled]
    expected = [(1 - c) * a / sum(alpha) + c / 3 for a in alpha]
    probs = ExcessLossWeights(eta=eta, smoothing=c)(torch.tensor(excess, dtype=torch.float64))
    assert_close(probs, torch.tensor(expected, dtype=torch.float64))


def test_two_steps_equal_one_step_on_the_summed_excess() -> None:
    """Without smoothing, multiplicative weights compose: two updates with lambda_1 then
    lambda_2 are one update with lambda_1 + lambda_2 (what the scheduler's EMA accumulates)."""
    l1 = torch.tensor([0.2, 0.6, 0.1], dtype=torch.float64)
    l2 = torch.tensor([0.4, 0.0, 0.3], dtype=torch.float64)
    total = l1 + l2
    eta = 0.7  # per unit of the largest summed excess
    w = torch.ones(3, dtype=torch.float64)
    for lam in (l1, l2):
        w = w * torch.exp(eta * lam / total.max())
        w = w / w.sum()
    assert_close(ExcessLossWeights(eta=eta, smoothing=0.0)(total), w)


def test_no_excess_anywhere_is_uniform() -> None:
    assert_close(ExcessLossWeights()(torch.zeros(4)), torch.full((4,), 0.25))
