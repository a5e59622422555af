"""Tests for gradbal.objectives.kl.

Hand example: pi = [1/4, 1/4, 1/2], pi_ref = [1/4, 1/2, 1/4] on three tokens, so
d = log(pi_ref / pi) = [0, log 2, -log 2] and

* k3 = exp(d) - d - 1 = [0, 2 - log 2 - 1, 1/2 + log 2 - 1] = [0, 0.306853, 0.193147]
* k1 = -d = [0, -log 2, log 2]
"""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import k1_kl, k3_kl

LN2 = math.log(2.0)
PI = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
REF = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))


def test_k3_values() -> None:
    assert_close(k3_kl(PI, REF), torch.tensor([[0.0, 1.0 - LN2, LN2 - 0.5]]))


def test_k1_values() -> None:
    assert_close(k1_kl(PI, REF), torch.tensor([[0.0, -LN2, LN2]]))


def test_k3_zero_when_equal_and_nonnegative() -> None:
    gen = torch.Generator().manual_seed(0)
    pi = -torch.rand(64, 32, generator=gen) * 10
    assert torch.equal(k3_kl(pi, pi), torch.zeros_like(pi))
    # Nearly equal inputs are where exp(d) - d - 1 rounds below 0; expm1(d) - d must not.
    near = pi + torch.randn(64, 32, generator=gen) * 1e-6
    far = pi + torch.randn(64, 32, generator=gen) * 5
    assert (k3_kl(pi, near) >= 0).all()
    assert (k3_kl(pi, far) >= 0).all()


def test_expectation_under_pi_is_exact_kl() -> None:
    """Over pi = [1/2, 1/4, 1/4], ref = [1/4, 1/2, 1/4]:

    KL(pi || ref) = 1/2 log 2 + 1/4 log(1/2) + 0 = (1/4) log 2 = 0.173287, and
    E_pi[k3] = sum(ref) - 1 + E_pi[log(pi / ref)] = KL, E_pi[k1] = KL.
    """
    pi_p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    ref_p = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    kl = torch.tensor(0.25 * LN2, dtype=torch.float64)
    assert_close((pi_p * k3_kl(pi_p.log(), ref_p.log())).sum(), kl)
    assert_close((pi_p * k1_kl(pi_p.log(), ref_p.log())).sum(), kl)


def test_k3_gradient() -> None:
    """d k3 / d log pi = 1 - exp(d) = [0, 1 - 2, 1 - 1/2] = [0, -1, 0.5]."""
    pi = PI.clone().requires_grad_(True)
    k3_kl(pi, REF).sum().backward()
    assert pi.grad is not None
    assert_close(pi.grad, torch.tensor([[0.0, -1.0, 0.5]]))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"same shape. Got \(1, 3\) and \(3,\)"):
        k3_kl(PI, REF[0])
