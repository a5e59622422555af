"""LearningProgressBandit and importance_weighted_reward: the EXP3 formulas by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.weighting import LearningProgressBandit, importance_weighted_reward


def test_exp3_probabilities_by_hand() -> None:
    """(1 - gamma) softmax(eta R / max R) + gamma / K, written out."""
    rewards = torch.tensor([0.2, 0.8, 0.4], dtype=torch.float64)
    eta, gamma = 2.0, 0.3
    e = [math.exp(eta * r / 0.8) for r in (0.2, 0.8, 0.4)]
    expected = [(1 - gamma) * v / sum(e) + gamma / 3 for v in e]
    probs = LearningProgressBandit(eta=eta, gamma=gamma)(rewards)
    assert_close(probs, torch.tensor(expected, dtype=torch.float64))
    assert float(probs.min()) >= gamma / 3  # exploration keeps every task drawn


def test_gamma_one_is_uniform_and_large_eta_picks_the_best() -> None:
    rewards = torch.tensor([0.1, 0.5, 0.3])
    assert_close(LearningProgressBandit(gamma=1.0)(rewards), torch.full((3,), 1 / 3))
    greedy = LearningProgressBandit(eta=1e4, gamma=0.0)(rewards)
    assert greedy.tolist() == [0.0, 1.0, 0.0]


def test_importance_weighting_divides_by_the_probability_of_the_measured_tasks() -> None:
    rewards = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)
    probs = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    measured = torch.tensor([True, False, True])
    out = importance_weighted_reward(rewards, probs, measured)
    assert_close(out[measured], torch.tensor([3.0, 0.5], dtype=torch.float64))
    assert math.isnan(float(out[1]))


def test_importance_weighting_is_unbiased() -> None:
    """E[R 1{drawn} / pi] = R: averaged over many draws of one task per step."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    rewards = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    total = torch.zeros(3, dtype=torch.float64)
    n = 20000
    drawn = torch.multinomial(probs, n, replacement=True, generator=gen)
    for k in range(3):
        total[k] = (drawn == k).sum() * rewards[k] / probs[k]
    assert_close(total / n, rewards, rtol=0.05, atol=0.0)


@pytest.mark.parametrize(
    ("probs", "measured", "match"),
    [
        (torch.tensor([0.0, 1.0]), torch.tensor([True, False]), "probability <= 0"),
        (torch.tensor([0.5, 0.5, 0.0]), torch.tensor([True, False]), "one shape"),
    ],
)
def test_importance_weighting_rejects_impossible_inputs(
    probs: torch.Tensor, measured: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        importance_weighted_reward(torch.ones(2), probs, measured)
