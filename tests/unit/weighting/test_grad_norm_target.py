"""GradNormTarget: the fixed point of GradNorm's target, by hand, and its properties."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gradbal.weighting import GradNormTarget, InverseGradNorm

STATS = {
    "spread": torch.tensor([[0.5, 2.0, 8.0, 1.0], [1.0, 0.7, 1.3, 0.9]], dtype=torch.float64),
    "wide_range": torch.tensor([[1e-9, 1.0, 1e6], [0.5, 1.0, 2.0]], dtype=torch.float64),
    "with_zero_ratio": torch.tensor([[1.0, 4.0, 2.0], [0.0, 1.0, 0.5]], dtype=torch.float64),
    "one_task": torch.tensor([[0.7], [1.1]], dtype=torch.float64),
}


def test_the_weights_meet_gradnorm_target_by_hand() -> None:
    """G = [1, 2, 4] (G^2 = [1, 4, 16]), L(t)/L(0) = [0.5, 1.0, 1.0], alpha = 1: r = L~/mean
    = [0.6, 1.2, 1.2]; w ∝ r / G = [0.6, 0.6, 0.3], normalised [0.4, 0.4, 0.2]. Then each
    weighted norm w_i G_i = [0.4, 0.8, 0.8] is mean(w G) r_i^alpha = (2/3) [0.6, 1.2, 1.2]."""
    stats = torch.tensor([[1.0, 4.0, 16.0], [0.5, 1.0, 1.0]], dtype=torch.float64)
    w = GradNormTarget(alpha=1.0)(stats)
    assert_close(w, torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))
    g, ratio = stats[0].sqrt(), stats[1]
    r = ratio / ratio.mean()
    assert_close(w * g, (w * g).mean() * r**1.0)


@pytest.mark.parametrize("alpha", [0.5, 1.5, 3.0])
def test_the_weighted_norms_are_proportional_to_the_target(alpha: float) -> None:
    """w_i G_i / r_i^alpha is one constant: the target up to a common factor (exactly the
    target, mean(w G) r_i^alpha, only where mean(r^alpha) = 1, e.g. alpha in {0, 1})."""
    stats = STATS["spread"]
    w = GradNormTarget(alpha=alpha)(stats)
    g, r = stats[0].sqrt(), stats[1] / stats[1].mean()
    gap = w * g / r**alpha
    assert_close(gap, gap.mean().expand(4))


def test_alpha_zero_is_inverse_grad_norm() -> None:
    stats = STATS["spread"]
    assert_close(GradNormTarget(alpha=0.0)(stats), InverseGradNorm()(stats[0]))


@pytest.mark.parametrize("stats", STATS.values(), ids=list(STATS))
def test_properties(stats: torch.Tensor) -> None:
    """Probabilities; permutation-equivariant over tasks; scale-invariant in each row;
    decreasing in the norm, increasing in the loss ratio."""
    rule = GradNormTarget()
    probs = rule(stats)
    assert probs.shape == stats.shape[1:] and (probs >= 0).all()
    assert_close(probs.sum(), torch.ones((), dtype=probs.dtype))
    perm = torch.randperm(stats.shape[1], generator=torch.Generator().manual_seed(0))
    assert_close(rule(stats[:, perm]), probs[perm])
    for c in (1e-6, 3.0, 1e6):
        assert_close(rule(stats * torch.tensor([[c], [1.0]])), probs, rtol=1e-6, atol=1e-9)
        assert_close(rule(stats * torch.tensor([[1.0], [c]])), probs, rtol=1e-6, atol=1e-9)
    if stats.shape[1] > 1:
        larger_norm = stats.clone()
        larger_norm[0, 0] *= 2
        assert rule(larger_norm)[0] < probs[0] or probs[0] == 0
        larger_ratio = stats.clone()
        larger_ratio[1, 0] += 1
        assert rule(larger_ratio)[0] > probs[0]


def test_a_zero_norm_takes_the_mass() -> None:
    w = GradNormTarget()(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert_close(w, torch.tensor([1.0, 0.0]))


def test_reads_two_statistics_and_rejects_one_row() -> None:
    rule = GradNormTarget(statistic="grad_norm_sq_pooled")
    assert rule.statistics == ("grad_norm_sq_pooled", "loss_ratio")
    assert GradNormTarget().statistics == ("grad_norm_sq", "loss_ratio")
    with pytest.raises(ValueError, match=r"\[2, num_tasks\]"):
        rule(torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        rule(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    assert repr(eval(repr(rule))) == repr(rule)
    assert repr(GradNormTarget()) == "GradNormTarget(alpha=1.5)"
    with pytest.raises(ValueError, match="statistic"):
        GradNormTarget(statistic="task_loss")  # type: ignore[arg-type]
