"""Tests for gradbal.objectives.dpo.

Hand example (``_preference_cases``): h = 2, beta = 0.5, so beta h = 1.

* DPO: -log sigma(1) = log(1 + e^-1) = 0.313262; rewards 0.5 * (+1, -1) = (0.5, -0.5)
* d/d pc = -beta sigma(-1) = -0.5 * 0.268941 = -0.134471; d/d pr = +0.134471
* cDPO eps = 0.1: 0.9 * 0.313262 + 0.1 * log(1 + e) (= 1.313262) = 0.413262
* robust eps = 0.25: (0.75 * 0.313262 - 0.25 * 1.313262) / 0.5 = -0.186738
* at the reference (h = 0): log 2 = 0.693147
"""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import DPO, PreferenceLogps, RobustDPO, dpo_loss, robust_dpo_loss
from tests.unit.objectives._preference_cases import grads, leaves, logps, refs

SOFTPLUS_M1 = math.log1p(math.exp(-1.0))  # 0.313262
SOFTPLUS_P1 = math.log1p(math.e)  # 1.313262


def test_hand_computed_loss_rewards_and_gradient() -> None:
    pc, pr = leaves()
    out = dpo_loss(pc, pr, *refs(), beta=0.5)
    assert_close(out.losses, torch.tensor([SOFTPLUS_M1], dtype=torch.float64))
    assert_close(out.chosen_rewards, torch.tensor([0.5], dtype=torch.float64))
    assert_close(out.rejected_rewards, torch.tensor([-0.5], dtype=torch.float64))
    assert not out.chosen_rewards.requires_grad and out.diagnostics == {}
    g_c, g_r = grads(out.losses, pc, pr)
    coefficient = 0.5 / (1 + math.e)  # beta * sigma(-1)
    assert g_c == pytest.approx(-coefficient) and g_r == pytest.approx(coefficient)


def test_label_smoothing_and_robust_variant() -> None:
    pc, pr = leaves()
    cdpo = dpo_loss(pc, pr, *refs(), beta=0.5, label_smoothing=0.1).losses
    assert cdpo.item() == pytest.approx(0.9 * SOFTPLUS_M1 + 0.1 * SOFTPLUS_P1)
    robust = robust_dpo_loss(pc, pr, *refs(), beta=0.5, label_smoothing=0.25).losses
    assert robust.item() == pytest.approx((0.75 * SOFTPLUS_M1 - 0.25 * SOFTPLUS_P1) / 0.5)
    assert robust_dpo_loss(pc, pr, *refs(), beta=0.5, label_smoothing=0.0).losses.item() == (
        pytest.approx(SOFTPLUS_M1)
    )


def test_at_the_reference_the_loss_is_log_two_for_every_pair() -> None:
    x = torch.randn(5)
    assert_close(dpo_loss(x, x + 1, x, x + 1).losses, torch.full((5,), math.log(2.0)))


def test_classes_call_the_functions() -> None:
    pc, pr = leaves()
    assert_close(DPO(beta=0.5)(logps(pc, pr)).losses, dpo_loss(pc, pr, *refs(), beta=0.5).losses)
    assert_close(
        RobustDPO(beta=0.5, label_smoothing=0.25)(logps(pc, pr)).losses,
        robust_dpo_loss(pc, pr, *refs(), beta=0.5, label_smoothing=0.25).losses,
    )
    assert repr(RobustDPO(0.2, 0.1)) == "RobustDPO(beta=0.2, label_smoothing=0.1)"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DPO(beta=0.0), "beta must be > 0"),
        (lambda: DPO(label_smoothing=0.6), "label_smoothing"),
        (lambda: RobustDPO(label_smoothing=0.5), r"\[0, 0.5\)"),
    ],
)
def test_bad_arguments_say_how_to_fix(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_shapes_must_be_one_value_per_pair() -> None:
    with pytest.raises(ValueError, match="must all be"):
        dpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.5])
def test_label_smoothing_is_cdpo_soft_label_cross_entropy(eps: float) -> None:
    """cDPO (Mitchell 2023, eq. 3): BCE of sigma(beta h) against the soft label 1 - eps."""
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=gen, dtype=torch.float64) * 3 for _ in range(4))
    pc.requires_grad_()
    ones = torch.ones(6, dtype=torch.long)
    out = DPO(beta=0.7, label_smoothing=eps)(PreferenceLogps(pc, pr, rc, rr, ones, ones))
    logits = 0.7 * ((pc - rc) - (pr - rr))
    target = torch.full_like(logits, 1 - eps)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction="none"
    )
    assert_close(out.losses, expected)
    # Gradient coefficient on log pi_w: -beta [(1 - eps) sigma(-x) - eps sigma(x)], zero where
    # sigma(x) = 1 - eps (the docstring's statement).
    (g,) = torch.autograd.grad(out.losses.sum(), [pc])
    x = logits.detach()
    assert_close(g, -0.7 * ((1 - eps) * torch.sigmoid(-x) - eps * torch.sigmoid(x)))


def test_label_smoothing_is_not_trl_sigmoid_which_ignores_it() -> None:
    """TRL 1.16 ``loss_type="sigmoid"``: ``-logsigmoid(beta * delta)``, label_smoothing unused.

    gradbal's DPO equals it at eps = 0 only, and its docstrings say exactly that.
    """
    pc, pr = leaves()
    trl_sigmoid = -torch.nn.functional.logsigmoid(0.5 * ((pc - refs()[0]) - (pr - refs()[1])))
    assert_close(dpo_loss(pc, pr, *refs(), beta=0.5).losses, trl_sigmoid)
    smoothed = dpo_loss(pc, pr, *refs(), beta=0.5, label_smoothing=0.1).losses
    assert (smoothed - trl_sigmoid).abs().item() > 0.09  # 0.413 vs 0.313
    for doc in (dpo_loss.__doc__, DPO.__doc__):
        assert doc is not None
        flat = " ".join(doc.split())
        for sentence in flat.split(". "):
            if 'loss_type="sigmoid"' in sentence:
                # every mention of TRL's sigmoid loss is qualified: equal only without smoothing
                qualified = ("eps = 0", "0 is plain DPO", "ignores ``label_smoothing``")
                assert any(q in sentence for q in qualified), sentence
