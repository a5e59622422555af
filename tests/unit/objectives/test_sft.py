"""Tests for gradbal.objectives.sft.

Hand example: target-token probabilities [[1/2, 1/2, (pad)], [1/4, (pad), (pad)]], so
NLLs [[log 2, log 2], [log 4]], T = 3 target tokens, token-mean NLL = 4 log 2 / 3 = 0.924196.

* losses = [2 log 2 / 3, log 4 / 3] = [0.462098, 0.462098]  (sum 0.924196)
* token_nll_mean = [log 2, log 4] = [0.693147, 1.386294]
* d losses[i] / d lp_it = -m_it / T = -1/3 on row i's target tokens, 0 elsewhere
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gradbal.objectives import sft_loss, token_logprobs

LN2 = math.log(2.0)
LP = torch.log(torch.tensor([[0.5, 0.5, 0.1], [0.25, 1.0, 1.0]]))
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_hand_computed_values() -> None:
    out = sft_loss(LP, MASK)
    assert_close(out.losses, torch.tensor([2 * LN2 / 3, 2 * LN2 / 3]))
    assert_close(out.losses.sum(), torch.tensor(4 * LN2 / 3))
    assert_close(out.token_nll_mean, torch.tensor([LN2, 2 * LN2]))


def test_gradient_of_each_share() -> None:
    for i in range(2):
        lp = LP.clone().requires_grad_(True)
        out = sft_loss(lp, MASK)
        assert not out.token_nll_mean.requires_grad
        (grad,) = torch.autograd.grad(out.losses[i], lp)
        expected = torch.zeros(2, 3)
        expected[i] = -MASK[i] / 3
        assert_close(grad, expected)


def test_sum_equals_cross_entropy_mean() -> None:
    """losses.sum() is F.cross_entropy(..., ignore_index=-100) with reduction="mean"."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen)
    labels = torch.randint(0, 7, (3, 5), generator=gen)
    labels[0, 3:] = -100
    labels[2, :] = -100
    lp = token_logprobs(logits, labels)
    out = sft_loss(lp, labels != -100)
    assert_close(out.losses.sum(), F.cross_entropy(logits.transpose(1, 2), labels))
    assert out.losses[2].item() == 0.0


def test_no_target_tokens_gives_zeros() -> None:
    out = sft_loss(torch.full((2, 2), float("-inf")), torch.zeros(2, 2))
    assert torch.equal(out.losses, torch.zeros(2))
    assert torch.equal(out.token_nll_mean, torch.zeros(2))


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"must be \[N, L\]. Got shape \(3,\)"):
        sft_loss(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        sft_loss(LP, MASK[:, :2])
