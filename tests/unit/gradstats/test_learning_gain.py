"""learning_gain and spearman against hand-worked numbers and scipy-free brute force."""

from __future__ import annotations

import math

import pytest
import torch

from gradbal.gradstats import learning_gain, spearman

NAN = float("nan")


def test_learning_gain_is_later_window_mean_minus_earlier() -> None:
    rewards = torch.tensor(
        [[0.0, 0.9], [0.1, 0.8], [0.2, 0.7], [0.6, 0.1], [0.8, NAN], [1.0, 0.3]]
    )  # [T=6, K=2]
    gains = learning_gain(rewards, window=3)
    assert gains.tolist() == pytest.approx([0.8 - 0.1, 0.2 - 0.8])
    assert gains.dtype == torch.float64


def test_learning_gain_needs_two_full_windows_and_a_value_in_each() -> None:
    assert torch.isnan(learning_gain(torch.ones(3, 2), window=2)).all()
    absent_early = torch.tensor([[NAN, 1.0], [NAN, 1.0], [0.5, 1.0], [0.5, 1.0]])
    gains = learning_gain(absent_early, window=2)
    assert math.isnan(gains[0]) and gains[1] == 0.0
    with pytest.raises(ValueError, match="window"):
        learning_gain(torch.ones(4, 2), window=0)


def test_spearman_ranks_with_ties() -> None:
    x = torch.tensor([1.0, 2.0, 2.0, 10.0])
    assert spearman(x, x * 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    # ties get average ranks: x ranks [1, 2.5, 2.5, 4], y ranks [4, 3, 2, 1]
    y = torch.tensor([4.0, 3.0, 2.0, 1.0])
    rx, ry = torch.tensor([1, 2.5, 2.5, 4.0]), torch.tensor([4, 3, 2, 1.0])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    expected = float((rx * ry).sum() / ((rx * rx).sum() * (ry * ry).sum()).sqrt())
    assert float(spearman(x, y)) == pytest.approx(expected)


def test_spearman_undefined_cases_are_nan() -> None:
    assert math.isnan(spearman(torch.tensor([1.0]), torch.tensor([2.0])))
    assert math.isnan(spearman(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])))
