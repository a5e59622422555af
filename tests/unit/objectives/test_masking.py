"""Tests for gradbal.objectives._masking."""

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import masked_mean, masked_sum


def test_masked_sum_and_mean_by_row() -> None:
    """x = [[1, 2, 3], [4, 5, 6]], mask = [[1, 1, 0], [0, 0, 0]].

    Row sums: [1 + 2, 0] = [3, 0]; row means: [3 / 2, 0] = [1.5, 0] (empty row -> 0, not nan).
    Whole tensor: sum 3, mean 3 / 2 = 1.5.
    """
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(masked_sum(x, mask, dim=1), torch.tensor([3.0, 0.0]))
    assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 0.0]))
    assert_close(masked_sum(x, mask.bool()), torch.tensor(3.0))
    assert_close(masked_mean(x, mask.bool()), torch.tensor(1.5))


def test_fully_masked_gives_zero_value_and_zero_grad() -> None:
    """An all-zero mask gives mean 0 and gradient 0 (count clamped to 1, padding replaced by 0)."""
    x = torch.tensor([[float("nan"), float("inf")]], requires_grad=True)
    mask = torch.zeros(1, 2, dtype=torch.bool)
    out = masked_mean(x, mask)
    out.backward()
    assert_close(out.detach(), torch.tensor(0.0))
    assert x.grad is not None
    assert_close(x.grad, torch.zeros(1, 2))


def test_mask_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"same shape.*Got mask \(2,\) and x \(1, 2\)"):
        masked_sum(torch.ones(1, 2), torch.ones(2))
