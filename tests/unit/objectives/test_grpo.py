"""Tests for gradbal.objectives.grpo."""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import grpo_token_loss

LN2 = math.log(2.0)


def test_ratio_one_gives_minus_advantage() -> None:
    """On-policy (pi_old = pi.detach()): r = 1, nothing clipped, loss = -A on every token,
    and d loss / d log pi = -A * r = -A.

    A = [0.5, -2] -> loss rows [-0.5, -0.5, -0.5] and [2, 2, 2].
    """
    pi = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, -1.5]], requires_grad=True)
    out = grpo_token_loss(pi, pi.detach(), torch.tensor([0.5, -2.0]))
    assert_close(out.per_token_loss.detach(), torch.tensor([[-0.5] * 3, [2.0] * 3]))
    assert_close(out.ratio, torch.ones(2, 3))
    assert not out.is_clipped.any()
    assert out.kl is None
    out.per_token_loss.sum().backward()
    assert pi.grad is not None
    assert_close(pi.grad, torch.tensor([[-0.5] * 3, [2.0] * 3]))


def _clip_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ratios = torch.tensor([[0.5, 0.9, 1.1, 1.5], [0.5, 0.9, 1.1, 1.5], [0.5, 0.9, 1.1, 1.5]])
    old = torch.full((3, 4), -1.0)
    pi = (old + ratios.log()).requires_grad_(True)
    return pi, old, torch.tensor([1.0, -1.0, 0.0])


def test_asymmetric_clipping_values_flags_and_gradients() -> None:
    """eps_low = 0.2, eps_high = 0.28, so clip(r) = clamp(r, 0.8, 1.28); r = [0.5, 0.9, 1.1, 1.5].

    A = +1: min(r, clip(r)) = [0.5, 0.9, 1.1, 1.28] -> loss [-0.5, -0.9, -1.1, -1.28];
            r = 1.5 > 1.28 is high-clipped (gradient 0); r = 0.5 is not (min picks r A).
    A = -1: min(-r, -clip(r)) = [-0.8, -0.9, -1.1, -1.5] -> loss [0.8, 0.9, 1.1, 1.5];
            r = 0.5 < 0.8 is low-clipped (gradient 0); r = 1.5 is not.
    A = 0:  loss 0, nothing clipped.
    Unclipped gradient d loss / d log pi = -A r: row 0 [-0.5, -0.9, -1.1, 0],
    row 1 [0, 0.9, 1.1, 1.5], row 2 zeros.
    """
    pi, old, adv = _clip_case()
    out = grpo_token_loss(pi, old, adv, epsilon_low=0.2, epsilon_high=0.28)
    expected = torch.tensor([[-0.5, -0.9, -1.1, -1.28], [0.8, 0.9, 1.1, 1.5], [0.0, 0.0, 0.0, 0.0]])
    assert_close(out.per_token_loss.detach(), expected)
    f, t = False, True
    assert torch.equal(out.is_high_clipped, torch.tensor([[f, f, f, t], [f] * 4, [f] * 4]))
    assert torch.equal(out.is_low_clipped, torch.tensor([[f] * 4, [t, f, f, f], [f] * 4]))
    assert torch.equal(out.is_clipped, out.is_low_clipped | out.is_high_clipped)
    out.per_token_loss.sum().backward()
    assert pi.grad is not None
    expected_grad = torch.tensor([[-0.5, -0.9, -1.1, 0.0], [0.0, 0.9, 1.1, 1.5], [0.0] * 4])
    assert_close(pi.grad, expected_grad)
    # "clipped" means exactly "this token sends no policy gradient" (for A != 0).
    assert torch.equal(out.is_clipped[:2], pi.grad[:2] == 0)


def test_epsilon_high_defaults_to_epsilon_low() -> None:
    """Symmetric eps = 0.2: r = 1.5 is clipped to 1.2 for A = +1, so row 0 loss is
    [-0.5, -0.9, -1.1, -1.2]; row 1 is as in the asymmetric case (the floor is 0.8 in both)."""
    pi, old, adv = _clip_case()
    out = grpo_token_loss(pi, old, adv, epsilon_low=0.2)
    assert_close(out.per_token_loss.detach()[0], torch.tensor([-0.5, -0.9, -1.1, -1.2]))
    assert_close(out.per_token_loss.detach()[1], torch.tensor([0.8, 0.9, 1.1, 1.5]))
    assert out.is_high_clipped[0].tolist() == [False, False, False, True]


def test_kl_term() -> None:
    """pi = [1/4, 1/2], ref = [1/2, 1/4], on-policy, A = 1, beta = 0.1.

    k3 = [2 - log 2 - 1, 1/2 + log 2 - 1] = [0.306853, 0.193147];
    loss = -1 + 0.1 * k3 = [-0.969315, -0.980685];
    d loss / d log pi = -A r + beta (1 - pi_ref / pi) = [-1 + 0.1 * (1 - 2), -1 + 0.1 * 0.5]
                      = [-1.1, -0.95].
    """
    pi = torch.log(torch.tensor([[0.25, 0.5]])).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.5, 0.25]]))
    out = grpo_token_loss(pi, pi.detach(), torch.tensor([1.0]), ref_logprobs=ref, beta=0.1)
    kl = torch.tensor([[1.0 - LN2, LN2 - 0.5]])
    assert out.kl is not None
    assert_close(out.kl, kl)
    assert not out.kl.requires_grad
    assert_close(out.per_token_loss.detach(), -1.0 + 0.1 * kl)
    out.per_token_loss.sum().backward()
    assert pi.grad is not None
    assert_close(pi.grad, torch.tensor([[-1.1, -0.95]]))


def test_ref_without_beta_reports_kl_only() -> None:
    pi = torch.log(torch.tensor([[0.25, 0.5]]))
    ref = torch.log(torch.tensor([[0.5, 0.25]]))
    out = grpo_token_loss(pi, pi, torch.tensor([1.0]), ref_logprobs=ref)
    assert out.kl is not None
    assert_close(out.per_token_loss, torch.full((1, 2), -1.0))


def test_no_gradient_to_old_or_ref_and_diagnostics_detached() -> None:
    pi = torch.randn(2, 3, requires_grad=True)
    old = torch.randn(2, 3, requires_grad=True)
    ref = torch.randn(2, 3, requires_grad=True)
    out = grpo_token_loss(pi, old, torch.tensor([1.0, -1.0]), ref_logprobs=ref, beta=0.1)
    assert out.per_token_loss.requires_grad
    assert not out.ratio.requires_grad
    out.per_token_loss.sum().backward()
    assert old.grad is None
    assert ref.grad is None


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    pi = (-torch.rand(2, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    old = pi.detach() + 0.05 * torch.randn(2, 3, generator=gen, dtype=torch.float64)
    ref = pi.detach() + 0.05 * torch.randn(2, 3, generator=gen, dtype=torch.float64)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p: grpo_token_loss(p, old, adv, ref_logprobs=ref, beta=0.04).per_token_loss,
        (pi,),
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0.1}, r"`beta=0.1`.*`ref_logprobs` is None"),
        ({"beta": -0.1}, r"`beta` must be a finite number >= 0. Got -0.1"),
        ({"epsilon_low": -0.1}, r"`epsilon_low` must be in \[0, 1\].*Got -0.1"),
        ({"epsilon_low": 1.5}, r"`epsilon_low` must be in \[0, 1\].*Got 1.5"),
        ({"epsilon_high": -0.2}, r"`epsilon_high` must be a finite number >= 0. Got -0.2"),
        ({"epsilon_high": math.inf}, r"`epsilon_high` must be a finite number >= 0. Got inf"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict, match: str) -> None:
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        grpo_token_loss(lp, lp, torch.zeros(2), **kwargs)


def test_invalid_shapes_raise() -> None:
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"both be \[N, L\]. Got \(2, 3\) and \(2, 4\)"):
        grpo_token_loss(lp, torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"`advantages` must be \[N\] = \[2\].*Got \(2, 1\)"):
        grpo_token_loss(lp, lp, torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"`ref_logprobs` must match"):
        grpo_token_loss(lp, lp, torch.zeros(2), ref_logprobs=torch.zeros(3, 3))
