"""Tests for gradbal.objectives.importance_sampling (TRL's vLLM TIS correction), by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import TruncatedImportanceSampling, grpo_token_loss, tis_weights

LN = math.log


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ratios exp(trainer - engine), row by row (the last column of row 1 is padding):

    row 0: [2.0, 0.5, 4.0]  sequence ratio 4.0
    row 1: [1.5, 1.2, pad]  sequence ratio 1.8 (the padding's 100.0 must not count)
    row 2: [0.9, 1.0, 1.0]  sequence ratio 0.9
    """
    engine = torch.full((3, 3), -1.0)
    ratios = torch.tensor([[2.0, 0.5, 4.0], [1.5, 1.2, 100.0], [0.9, 1.0, 1.0]])
    trainer = engine + ratios.log()
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    return trainer, engine, mask


@pytest.mark.parametrize(
    ("mode", "expected_weights", "expected_capped"),
    [
        # cap 3: only row 0's third token (4.0) is above it
        (
            "token_truncate",
            [[2.0, 0.5, 3.0], [1.5, 1.2, 0.0], [0.9, 1.0, 1.0]],
            [[0, 0, 1], [0] * 3, [0] * 3],
        ),
        (
            "token_mask",
            [[2.0, 0.5, 0.0], [1.5, 1.2, 0.0], [0.9, 1.0, 1.0]],
            [[0, 0, 1], [0] * 3, [0] * 3],
        ),
        # sequence ratios 4.0, 1.8, 0.9: row 0 is above the cap
        (
            "sequence_truncate",
            [[3.0] * 3, [1.8, 1.8, 0.0], [0.9] * 3],
            [[1, 1, 1], [0] * 3, [0] * 3],
        ),
        ("sequence_mask", [[0.0] * 3, [1.8, 1.8, 0.0], [0.9] * 3], [[1, 1, 1], [0] * 3, [0] * 3]),
    ],
)
def test_weights_match_a_hand_computation(
    mode: str, expected_weights: list[list[float]], expected_capped: list[list[int]]
) -> None:
    trainer, engine, mask = _case()
    out = tis_weights(trainer, engine, mask, mode=mode, cap=3.0)  # type: ignore[arg-type]
    assert_close(out.weights, torch.tensor(expected_weights))
    assert torch.equal(out.capped, torch.tensor(expected_capped, dtype=torch.bool))
    assert out.ratio[1, 2] == 0.0  # padding has no ratio
    assert not out.weights.requires_grad


def test_the_weights_are_constants_and_scale_the_policy_term_only() -> None:
    """pi = old (ratio 1), A = [1, -1], beta = 0.5 with k3 KL = 0 (ref = pi): the loss per token
    is -w A, and d loss / d log pi = -w A (no gradient through w)."""
    trainer, engine, mask = _case()
    trainer.requires_grad_(True)
    w = tis_weights(trainer, engine, mask, mode="token_truncate", cap=3.0).weights
    pi = torch.zeros(3, 3, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 2.0])
    out = grpo_token_loss(
        pi, pi.detach(), adv, importance_weights=w, ref_logprobs=pi.detach(), beta=0.5
    )
    assert_close(out.per_token_loss.detach(), -w * adv.unsqueeze(1))
    out.per_token_loss.sum().backward()
    assert pi.grad is not None and trainer.grad is None
    assert_close(pi.grad, -w * adv.unsqueeze(1))


def test_kl_is_not_weighted() -> None:
    """Zero advantage: only beta * k3 remains, whatever the weights (TRL adds it after)."""
    pi = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    plain = grpo_token_loss(pi, pi, torch.zeros(1), ref_logprobs=ref, beta=0.1)
    weighted = grpo_token_loss(
        pi, pi, torch.zeros(1), ref_logprobs=ref, beta=0.1, importance_weights=torch.zeros(1, 2)
    )
    assert_close(weighted.per_token_loss, plain.per_token_loss)


def test_equal_log_probs_give_weight_one_in_every_mode() -> None:
    lp = torch.randn(4, 5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        out = tis_weights(lp, lp.clone(), mask, mode=mode)  # type: ignore[arg-type]
        assert torch.equal(out.weights, torch.ones(4, 5)), mode
        assert not out.capped.any()


def test_the_default_is_trls() -> None:
    tis = TruncatedImportanceSampling()
    assert (tis.mode, tis.cap, tis.per_token) == ("sequence_mask", 3.0, False)
    assert TruncatedImportanceSampling(mode="token_mask").per_token


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "sequence"}, "`mode` must be one of ['token_truncate'"),
        ({"cap": 0.5}, "`cap` must be a finite number >= 1"),
        ({"cap": math.inf}, "`cap` must be a finite number >= 1"),
    ],
)
def test_bad_settings_say_what_and_how(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        TruncatedImportanceSampling(**kwargs)  # type: ignore[arg-type]


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must both be"):
        tis_weights(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="`importance_weights` must match"):
        grpo_token_loss(
            torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), importance_weights=torch.ones(2)
        )
