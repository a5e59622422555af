"""InverseGradNorm: hand-worked numbers (the shared properties are in test_properties.py)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gradbal.weighting import InverseGradNorm


def test_inverse_grad_norm_equalises_contributions() -> None:
    sq = torch.tensor([1.0, 4.0, 100.0], dtype=torch.float64)
    probs = InverseGradNorm()(sq)
    contributions = probs * sq.sqrt()  # expected share of the update, per task
    assert_close(contributions, contributions.mean().expand(3))
    # A zero statistic is the limit: its task takes all the mass.
    assert InverseGradNorm()(torch.tensor([0.0, 1.0])).tolist() == [1.0, 0.0]
