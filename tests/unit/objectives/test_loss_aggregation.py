"""Tests for gradbal.objectives.loss_aggregation.

Shared 2x3 ragged example (the padded position holds 100, which must be ignored):

    per_token_loss = [[1, 2, 3], [4, 5, 100]]    mask = [[1, 1, 1], [1, 1, 0]]
    row sums s = [6, 9], row lengths |o| = [3, 2], N = 2, tokens T = 5, max_completion_length M = 4

* GRPO:    share_i = (s_i / |o_i|) / N = [2 / 2, 4.5 / 2] = [1.0, 2.25];   sum 3.25;  d/dl = 1/(N |o_i|)
* Dr GRPO: share_i = s_i / (N M)       = [6 / 8, 9 / 8]   = [0.75, 1.125]; sum 1.875; d/dl = 1/8
* BNPO:    share_i = s_i / T           = [6 / 5, 9 / 5]   = [1.2, 1.8];    sum 3.0;   d/dl = 1/5
* DAPO, global_num_tokens = 7.5 (two ranks with 5 and 10 tokens: 15 / 2):
           share_i = s_i / 7.5         = [0.8, 1.2];                        sum 2.0;   d/dl = 1/7.5
"""

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import (
    BNPOAggregation,
    DAPOAggregation,
    DrGRPOAggregation,
    GRPOAggregation,
    LossAggregation,
)

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
M = 4
GLOBAL_TOKENS = 7.5

# (aggregation, expected shares, expected d share_i / d l_it for each row's active tokens)
CASES: list[tuple[LossAggregation, list[float], list[float]]] = [
    (GRPOAggregation(), [1.0, 2.25], [1 / 6, 1 / 4]),
    (DrGRPOAggregation(), [0.75, 1.125], [1 / 8, 1 / 8]),
    (BNPOAggregation(), [1.2, 1.8], [1 / 5, 1 / 5]),
    (DAPOAggregation(), [0.8, 1.2], [1 / 7.5, 1 / 7.5]),
]
ALL = [case[0] for case in CASES]


def _call(agg: LossAggregation, loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return agg(loss, mask, max_completion_length=M, global_num_tokens=GLOBAL_TOKENS)


@pytest.mark.parametrize(("agg", "shares", "grads"), CASES, ids=repr)
def test_hand_computed_shares(
    agg: LossAggregation, shares: list[float], grads: list[float]
) -> None:
    out = _call(agg, LOSS, MASK)
    assert_close(out, torch.tensor(shares))
    assert_close(out.sum(), torch.tensor(sum(shares)))


@pytest.mark.parametrize(("agg", "shares", "grads"), CASES, ids=repr)
def test_gradient_of_each_share_is_its_normaliser(
    agg: LossAggregation, shares: list[float], grads: list[float]
) -> None:
    """d shares[i] / d per_token_loss = mask_i / normaliser_i on row i, 0 everywhere else."""
    for i in range(2):
        loss = LOSS.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_call(agg, loss, MASK)[i], loss)
        expected = torch.zeros(2, 3)
        expected[i] = MASK[i] * grads[i]
        assert_close(grad, expected)


def test_sums_match_trl_formulas() -> None:
    """The summed shares equal TRL's scalar losses written the TRL way."""
    m = MASK.float()
    masked = LOSS * m
    trl = {
        "grpo": ((masked.sum(-1) / m.sum(-1).clamp(min=1.0)).mean()),
        "dr_grpo": masked.sum() / (LOSS.size(0) * M),
        "bnpo": masked.sum() / m.sum().clamp(min=1.0),
        "dapo": masked.sum() / GLOBAL_TOKENS,
    }
    for agg, key in zip(ALL, trl, strict=True):
        assert_close(_call(agg, LOSS, MASK).sum(), trl[key])


def test_dapo_without_global_count_is_bnpo_and_accepts_tensor() -> None:
    local = DAPOAggregation()(LOSS, MASK, max_completion_length=M)
    assert_close(local, BNPOAggregation()(LOSS, MASK, max_completion_length=M))
    as_tensor = DAPOAggregation()(
        LOSS, MASK, max_completion_length=M, global_num_tokens=torch.tensor(GLOBAL_TOKENS)
    )
    assert_close(as_tensor, torch.tensor([0.8, 1.2]))


def test_dapo_ddp_average_is_global_token_mean() -> None:
    """Two ranks with 5 and 3 tokens; each divides by (5 + 3) / 2 = 4, DDP averages the two
    gradients (here: losses), giving sum of all token losses / 8."""
    gen = torch.Generator().manual_seed(0)
    loss_a, loss_b = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)
    mask_a = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mask_b = torch.tensor([[1, 0, 0], [1, 1, 0]])
    agg = DAPOAggregation()
    per_rank = [
        agg(loss, mask, max_completion_length=M, global_num_tokens=4.0).sum()
        for loss, mask in ((loss_a, mask_a), (loss_b, mask_b))
    ]
    global_mean = ((loss_a * mask_a).sum() + (loss_b * mask_b).sum()) / 8
    assert_close((per_rank[0] + per_rank[1]) / 2, global_mean)


@pytest.mark.parametrize("agg", ALL, ids=repr)
@pytest.mark.parametrize("seed", range(5))
def test_additivity_over_row_subsets(agg: LossAggregation, seed: int) -> None:
    """For any subset S of rows, shares[S].sum() equals the batch loss with every other row's
    token losses zeroed (same mask, hence same normalisers), and its gradient equals the batch
    loss gradient restricted to S. This is what splits an update by task exactly."""
    gen = torch.Generator().manual_seed(seed)
    n, length = 6, 5
    loss = torch.randn(n, length, generator=gen, dtype=torch.float64).requires_grad_(True)
    lengths = torch.randint(0, length + 1, (n,), generator=gen)
    mask = torch.arange(length) < lengths.unsqueeze(1)
    subset = torch.rand(n, generator=gen) < 0.5
    shares = agg(loss, mask, max_completion_length=length, global_num_tokens=11.0)
    restricted = agg(
        loss * subset.unsqueeze(1), mask, max_completion_length=length, global_num_tokens=11.0
    ).sum()
    assert_close(shares[subset].sum(), restricted)
    (grad_subset,) = torch.autograd.grad(shares[subset].sum(), loss, retain_graph=True)
    (grad_rest,) = torch.autograd.grad(shares[~subset].sum(), loss, retain_graph=True)
    (grad_full,) = torch.autograd.grad(shares.sum(), loss)
    assert_close(grad_subset, grad_full * subset.unsqueeze(1))
    assert_close(grad_subset + grad_rest, grad_full)


@pytest.mark.parametrize("agg", ALL, ids=repr)
def test_fully_masked_row_and_nan_padding(agg: LossAggregation) -> None:
    loss = torch.tensor([[1.0, float("nan")], [float("nan"), float("inf")]], requires_grad=True)
    mask = torch.tensor([[True, False], [False, False]])
    shares = agg(loss, mask, max_completion_length=2)
    assert torch.isfinite(shares).all()
    assert shares[1].item() == 0.0
    shares.sum().backward()
    assert loss.grad is not None
    assert torch.isfinite(loss.grad).all()


@pytest.mark.parametrize(
    ("agg", "text"),
    [
        (GRPOAggregation(), "GRPOAggregation()"),
        (DrGRPOAggregation(), "DrGRPOAggregation()"),
        (BNPOAggregation(), "BNPOAggregation()"),
        (DAPOAggregation(), "DAPOAggregation()"),
    ],
)
def test_repr(agg: LossAggregation, text: str) -> None:
    assert repr(agg) == text


@pytest.mark.parametrize("agg", ALL, ids=repr)
def test_invalid_inputs_raise(agg: LossAggregation) -> None:
    with pytest.raises(ValueError, match=r"must be \[N, L\]. Got shape \(2, 3, 1\)"):
        agg(LOSS.unsqueeze(-1), MASK.unsqueeze(-1), max_completion_length=M)
    with pytest.raises(ValueError, match=r"`max_completion_length` must be >= 1. Got 0"):
        agg(LOSS, MASK, max_completion_length=0)
    with pytest.raises(ValueError, match=r"same shape"):
        agg(LOSS, MASK[:, :2], max_completion_length=M)


def test_dr_grpo_rejects_completions_longer_than_max() -> None:
    with pytest.raises(
        ValueError, match=r"3 completion positions, more than max_completion_length=2"
    ):
        DrGRPOAggregation()(LOSS, MASK, max_completion_length=2)


@pytest.mark.parametrize("bad", [0.0, -3.0])
def test_dapo_rejects_non_positive_global_count(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"`global_num_tokens` must be > 0. Got {bad}"):
        DAPOAggregation()(LOSS, MASK, max_completion_length=M, global_num_tokens=bad)
