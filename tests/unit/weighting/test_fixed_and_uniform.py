"""Fixed and Uniform: hand-worked numbers (the shared properties are in test_properties.py)."""

from __future__ import annotations

import pytest
import torch

from gradbal.weighting import Fixed, Uniform


def test_fixed_and_uniform() -> None:
    assert Fixed([1, 3])(torch.tensor([5.0, 0.0])).tolist() == [0.25, 0.75]
    assert Uniform()(torch.zeros(4)).tolist() == [0.25] * 4
    with pytest.raises(ValueError, match="2 values but there are 3 tasks"):
        Fixed([1.0, 1.0])(torch.ones(3))
    for bad in ([], [0.0, 0.0], [1.0, -1.0], [float("nan")]):
        with pytest.raises(ValueError, match="finite non-negative"):
            Fixed(bad)
