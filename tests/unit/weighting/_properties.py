"""Property asserts every weighting rule must pass (TorchJD tests/unit/aggregation/_asserts.py)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.testing import assert_close

from gradbal.weighting import TaskWeighting

# Statistic vectors the properties are checked on: spread, tiny, huge, equal, with zeros, K=1.
STATS = {
    "spread": torch.tensor([0.5, 2.0, 8.0, 1.0], dtype=torch.float64),
    "wide_range": torch.tensor([1e-9, 1.0, 1e6], dtype=torch.float64),
    "equal": torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64),
    "with_zero": torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64),
    "one_task": torch.tensor([0.7], dtype=torch.float64),
    "float32": torch.tensor([0.1, 0.2, 0.3]),
}


def assert_probabilities(rule: TaskWeighting, stats: Tensor) -> None:
    """Same shape, finite, non-negative, sums to 1."""
    probs = rule(stats)
    assert probs.shape == stats.shape
    assert torch.isfinite(probs).all() and (probs >= 0).all(), probs
    assert_close(probs.sum(), torch.ones((), dtype=probs.dtype))


def assert_permutation_equivariant(rule: TaskWeighting, stats: Tensor) -> None:
    """Permuting the tasks permutes the probabilities."""
    perm = torch.randperm(stats.numel(), generator=torch.Generator().manual_seed(0))
    assert_close(rule(stats[perm]), rule(stats)[perm])


def assert_scale_invariant(rule: TaskWeighting, stats: Tensor) -> None:
    """Multiplying every statistic by the same c > 0 changes nothing (units do not matter)."""
    for c in (1e-6, 3.0, 1e6):
        assert_close(rule(stats * c), rule(stats), rtol=1e-6, atol=1e-9)


def assert_monotone(rule: TaskWeighting, stats: Tensor, direction: int) -> None:
    """A larger statistic gets a larger (+1), smaller (-1) or equal (0) probability."""
    probs = rule(stats)
    order = torch.argsort(stats)
    diffs = probs[order].diff()
    if direction > 0:
        assert (diffs >= 0).all(), (stats, probs)
    elif direction < 0:
        assert (diffs <= 0).all(), (stats, probs)
    else:
        assert_close(diffs, torch.zeros_like(diffs))
