"""Tests for gradbal.objectives.balanced_dpo: the two gradient parts get the intended ratio.

Hand example (doctest of ``balanced_dpo_loss``): pc = -1, pr = -2, references -1.5, one token
each, beta = 1. r = pi_w / pi_l = e > C = 2, so w_w = 2: z = 2 * 0.5 - (-0.5) = 1.5 and
loss = log(1 + e^-1.5) = 0.201413; d/d pc = -2 sigma(-1.5) = -0.364633, d/d pr = sigma(-1.5)
= 0.182426 (ratio 2 = C, the clip).

Intended ratio, unclipped: with single-token completions, pc = log p_w and pr = log p_l, so
|dL/dp_w| = w_w beta sigma(-z) / p_w and |dL/dp_l| = w_l beta sigma(-z) / p_l; w_w / w_l =
p_w / p_l makes them equal (DPO: ratio p_w / p_l between the rejected and the chosen side).
"""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import (
    BalancedDPO,
    PreferenceLogps,
    balance_weights,
    balanced_dpo_loss,
    dpo_loss,
)

T = torch.tensor


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_hand_computed_clipped_case() -> None:
    pc = T([-1.0], dtype=torch.float64, requires_grad=True)
    pr = T([-2.0], dtype=torch.float64, requires_grad=True)
    ref = T([-1.5], dtype=torch.float64)
    one = T([1])
    out = balanced_dpo_loss(pc, pr, ref, ref, one, one, beta=1.0)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1.5)))
    g_c, g_r = torch.autograd.grad(out.losses.sum(), [pc, pr])
    assert g_c.item() == pytest.approx(-2 * sigmoid(-1.5))
    assert g_r.item() == pytest.approx(sigmoid(-1.5))
    assert out.chosen_rewards.item() == pytest.approx(0.5)  # unweighted beta, as DPO's


@pytest.mark.parametrize("reweight", ["chosen", "rejected"])
def test_probability_space_parts_are_equal_where_unclipped(reweight: str) -> None:
    p_w = T([0.30, 0.05, 0.20], dtype=torch.float64, requires_grad=True)
    p_l = T([0.20, 0.08, 0.25], dtype=torch.float64, requires_grad=True)  # ratios within [1/2, 2]
    ref_w, ref_l = T([0.25, 0.1, 0.1], dtype=torch.float64), T([0.3, 0.1, 0.2], dtype=torch.float64)
    one = torch.ones(3, dtype=torch.long)
    out = balanced_dpo_loss(
        p_w.log(),
        p_l.log(),
        ref_w.log(),
        ref_l.log(),
        one,
        one,
        beta=0.7,
        reweight=reweight,  # type: ignore[arg-type]
    )
    g_w, g_l = torch.autograd.grad(out.losses.sum(), [p_w, p_l])
    assert (g_w < 0).all() and (g_l > 0).all()  # raise the chosen, lower the rejected
    assert_close(g_l.abs() / g_w.abs(), torch.ones(3, dtype=torch.float64))
    # DPO on the same pairs: the rejected side is p_w / p_l times the chosen side.
    dpo = dpo_loss(p_w.log(), p_l.log(), ref_w.log(), ref_l.log(), beta=0.7)
    d_w, d_l = torch.autograd.grad(dpo.losses.sum(), [p_w, p_l])
    assert_close(d_l.abs() / d_w.abs(), (p_w / p_l).detach())


@pytest.mark.parametrize("reweight", ["chosen", "rejected"])
def test_log_space_ratio_is_the_clipped_per_token_probability_ratio(reweight: str) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths_w, lengths_l = T([3, 5, 2, 7, 4]), T([4, 5, 6, 2, 4])
    pc = (-torch.rand(5, generator=gen, dtype=torch.float64) * 3 * lengths_w).requires_grad_()
    pr = (-torch.rand(5, generator=gen, dtype=torch.float64) * 3 * lengths_l).requires_grad_()
    ref = -torch.rand(5, generator=gen, dtype=torch.float64) * 10
    logps = PreferenceLogps(pc, pr, ref, ref + 1, lengths_w, lengths_l)
    out = BalancedDPO(beta=0.3, clip=2.0, reweight=reweight)(logps)  # type: ignore[arg-type]
    g_c, g_r = torch.autograd.grad(out.losses.sum(), [pc, pr])
    r = torch.exp(pc / lengths_w - pr / lengths_l).detach()
    expected = r.clamp(max=2.0) if reweight == "chosen" else 1 / (1 / r).clamp(max=2.0)
    assert_close(-g_c / g_r, expected)
    w_w, w_l = out.diagnostics["balance_weight/chosen"], out.diagnostics["balance_weight/rejected"]
    assert_close(w_w / w_l, expected)


def test_weights_are_stop_gradient() -> None:
    pc = T([-1.0, -2.0], requires_grad=True)
    weights = balance_weights(pc, T([-2.0, -1.0]), T([1, 1]), T([1, 1]))
    assert not any(w.requires_grad for w in weights)


def test_no_overflow_for_long_unlikely_completions() -> None:
    w_w, _ = balance_weights(T([-1e4]), T([-9e4]), T([10]), T([10]), clip=2.0)
    assert w_w.item() == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.5}, "clip"),
        ({"clip": float("inf")}, "clip"),
        ({"reweight": "both"}, "reweight must be"),
        ({"beta": 0.0}, "beta must be > 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BalancedDPO(**kwargs)  # type: ignore[arg-type]
