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
import re
from pathlib import Path

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


# ---- docs/balanced_dpo.md §3: every statement and number, recomputed -------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "balanced_dpo.md"


def _section_3() -> str:
    text = DOC.read_text()
    return text[text.index("## 3.") : text.index("## 4.")]


def _weights(r: float, reweight: str, clip: float = 2.0) -> tuple[float, float]:
    w_w, w_l = balance_weights(
        T([math.log(r)], dtype=torch.float64),
        T([0.0], dtype=torch.float64),
        T([1]),
        T([1]),
        clip=clip,
        reweight=reweight,  # type: ignore[arg-type]
    )
    return float(w_w), float(w_l)


def test_coefficients_at_r_below_one_move_the_other_way_than_the_old_doc_said() -> None:
    """At r = 0.67 "chosen" lowers the chosen coefficient and "rejected" raises the rejected one."""
    w_w, w_l = _weights(0.67, "chosen")
    assert (w_w, w_l) == (pytest.approx(0.67), 1.0)  # below DPO's 1
    w_w, w_l = _weights(0.67, "rejected")
    assert (w_w, w_l) == (1.0, pytest.approx(1 / 0.67))  # 1.49, above DPO's 1
    section = _section_3()
    assert "never lowers" not in section and "never raises" not in section


def test_doc_weight_table_and_clip_regions() -> None:
    """Each row of the (r, weights) table; the clip is active exactly where the doc says."""
    section = _section_3()
    rows = re.findall(
        r"^\| ([\d.]+) \| \(([\d.]+), ([\d.]+)\)( clipped)? \| \(([\d.]+), ([\d.]+)\)( clipped)? \|$",
        section,
        re.M,
    )
    assert len(rows) == 4, rows
    for r_text, cw, cl, c_clip, rw, rl, r_clip in rows:
        r = float(r_text)
        for mode, (w_w, w_l), clipped in (
            ("chosen", (cw, cl), c_clip),
            ("rejected", (rw, rl), r_clip),
        ):
            got = _weights(r, mode)
            assert got == (pytest.approx(float(w_w), rel=2e-3), pytest.approx(float(w_l), rel=2e-3))
            # clip active: "chosen" where r > C, "rejected" where r < 1/C; then w_w / w_l != r
            active = r > 2.0 if mode == "chosen" else r < 0.5
            assert bool(clipped) == active, (r, mode)
            assert (got[0] / got[1] == pytest.approx(r)) != active
    # once clipped the two modes give different ratios: C for "chosen", 1/C for "rejected"
    assert _weights(3.0, "chosen")[0] / _weights(3.0, "chosen")[1] == 2.0
    assert _weights(0.3, "rejected")[0] / _weights(0.3, "rejected")[1] == 0.5


def _prob_ratios(p_w: float, p_l: float, n: int, mode: str | None) -> tuple[float, float]:
    """(sequence ratio |dL/dpi_l| / |dL/dpi_w|, token ratio |dL/dp̄_l| / |dL/dp̄_w|), n tokens."""
    out = []
    for per_token in (False, True):
        a = T([p_w if per_token else p_w**n], dtype=torch.float64, requires_grad=True)
        b = T([p_l if per_token else p_l**n], dtype=torch.float64, requires_grad=True)
        pc, pr = (n * a.log(), n * b.log()) if per_token else (a.log(), b.log())
        ref, lengths = T([-5.0], dtype=torch.float64), T([n])
        if mode is None:
            loss = dpo_loss(pc, pr, ref, ref, beta=0.1).losses
        else:
            loss = balanced_dpo_loss(
                pc,
                pr,
                ref,
                ref,
                lengths,
                lengths,
                beta=0.1,
                reweight=mode,  # type: ignore[arg-type]
            ).losses
        g_w, g_l = torch.autograd.grad(loss.sum(), [a, b])
        out.append(float(g_l.abs() / g_w.abs()))
    return out[0], out[1]


def _num(text: str) -> float:
    return float(text.split(" ")[0])


def test_doc_per_sequence_vs_per_token_table() -> None:
    """Balanced per token; per sequence the imbalance is essentially DPO's (the doc's numbers)."""
    section = _section_3()
    rows = re.findall(r"^\| ([\d.]+) \| ([\de.]+) \|((?: [^|]+ \|){6})$", section, re.M)
    assert len(rows) == 2, rows
    pairs = {"0.68": (0.34, 0.5), "2.63": (0.5, 0.19)}
    for r_text, seq_text, cells in rows:
        p_w, p_l = pairs[r_text]
        assert p_w / p_l == pytest.approx(float(r_text), rel=2e-3)
        assert (p_w / p_l) ** 10 == pytest.approx(float(seq_text), rel=0.04)
        doc = [_num(c.strip()) for c in cells.strip(" |").split("|")]
        got = [_prob_ratios(p_w, p_l, 10, mode) for mode in (None, "chosen", "rejected")]
        sequence, token = [g[0] for g in got], [g[1] for g in got]
        assert sequence == pytest.approx(doc[:3], rel=0.04)
        assert token == pytest.approx(doc[3:], rel=0.01)
    # r^10 -> r^9 where unclipped: the weights remove one factor of r, not r^n
    seq_dpo, tok_dpo = _prob_ratios(0.34, 0.5, 10, None)
    seq_bal, tok_bal = _prob_ratios(0.34, 0.5, 10, "chosen")
    assert seq_bal == pytest.approx(seq_dpo / 0.68) and tok_bal == pytest.approx(1.0)
    assert tok_dpo == pytest.approx(0.68)
