"""The resume tests' state comparison must tell equal states from different ones."""

import math

import torch

from tests._compare import same_state


def test_equal_states_with_nans_compare_equal() -> None:
    a = {"ema": [math.nan, 0.5], "t": torch.tensor([math.nan, 1.0]), "n": 3}
    b = {"ema": [math.nan, 0.5], "t": torch.tensor([math.nan, 1.0]), "n": 3}
    assert same_state(a, b)


def test_any_difference_is_caught() -> None:
    base = {"ema": [math.nan, 0.5], "t": torch.tensor([math.nan, 1.0]), "n": 3}
    for other in (
        {**base, "ema": [0.0, 0.5]},
        {**base, "t": torch.tensor([math.nan, 2.0])},
        {**base, "t": torch.tensor([math.nan, 1.0], dtype=torch.float64)},
        {**base, "t": torch.tensor([[math.nan, 1.0]])},
        {**base, "n": 4},
        {k: v for k, v in base.items() if k != "n"},
        {**base, "t": [math.nan, 1.0]},
    ):
        assert not same_state(base, other), other
