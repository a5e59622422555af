"""Tests for gradbal.objectives.logprobs.

Hand example: logits [0, 0, log 2] give softmax [1/4, 1/4, 1/2], so label 2 has log-prob
log(1/2) = -0.693147 and label 0 has log(1/4) = -1.386294; the entropy is
-(2 * 1/4 * log(1/4) + 1/2 * log(1/2)) = 1.5 log 2 = 1.039721.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import token_entropy, token_logprobs

LN2 = math.log(2.0)


def _reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _random(n: int = 5, length: int = 4, vocab: int = 11, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, length, vocab, generator=gen) * 3
    labels = torch.randint(0, vocab, (n, length), generator=gen)
    return logits, labels


def test_hand_computed_values() -> None:
    logits = torch.tensor([[[0.0, 0.0, LN2], [0.0, 0.0, LN2]]])
    labels = torch.tensor([[2, 0]])
    assert_close(token_logprobs(logits, labels), torch.tensor([[-LN2, -2 * LN2]]))
    assert_close(token_entropy(logits), torch.tensor([[1.5 * LN2, 1.5 * LN2]]))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])
def test_matches_log_softmax_gather_for_any_chunking(chunk_size: int) -> None:
    logits, labels = _random()
    out = token_logprobs(logits, labels, chunk_size=chunk_size)
    assert out.dtype == torch.float32
    assert_close(out, _reference(logits, labels))


def test_gradient_matches_reference() -> None:
    logits, labels = _random()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    weights = torch.randn(labels.shape, generator=torch.Generator().manual_seed(1))
    (token_logprobs(a, labels, chunk_size=2) * weights).sum().backward()
    (_reference(b, labels) * weights).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_gives_fp32_output(dtype: torch.dtype) -> None:
    """Half logits are upcast per chunk: the result is fp32 and equals the fp32 reference on the
    same (rounded) logits, and agrees with a half-precision log_softmax to half tolerance."""
    logits, labels = _random()
    half = logits.to(dtype).requires_grad_(True)
    out = token_logprobs(half, labels, chunk_size=2)
    assert out.dtype == torch.float32
    assert_close(out, _reference(half.detach().float(), labels))
    assert_close(out.to(dtype), _reference(half.detach(), labels), atol=0.05, rtol=0.02)
    out.sum().backward()
    assert half.grad is not None and half.grad.dtype == dtype


def test_float64_stays_float64() -> None:
    logits, labels = _random()
    assert token_logprobs(logits.double(), labels).dtype == torch.float64


def test_ignore_index_positions_are_zero_with_zero_gradient() -> None:
    logits, labels = _random(n=2, length=3)
    labels[1, 2] = -100
    leaf = logits.clone().requires_grad_(True)
    out = token_logprobs(leaf, labels)
    assert out[1, 2].item() == 0.0
    kept = labels.clamp(min=0)
    assert_close(out[0], _reference(logits, kept)[0])
    out.sum().backward()
    assert leaf.grad is not None
    assert torch.equal(leaf.grad[1, 2], torch.zeros(11))


def test_entropy_matches_reference_and_handles_neg_inf() -> None:
    logits, _ = _random()
    logp = torch.log_softmax(logits, dim=-1)
    assert_close(token_entropy(logits, chunk_size=2), -(logp.exp() * logp).sum(-1))
    masked = torch.tensor([[[0.0, float("-inf"), 0.0, 0.0]]], requires_grad=True)
    ent = token_entropy(masked)
    assert_close(ent.detach(), torch.tensor([[math.log(3.0)]]))
    ent.sum().backward()
    assert masked.grad is not None and torch.isfinite(masked.grad).all()


def test_empty_batch() -> None:
    out = token_logprobs(torch.zeros(0, 3, 5, dtype=torch.bfloat16), torch.zeros(0, 3).long())
    assert out.shape == (0, 3) and out.dtype == torch.float32


def test_invalid_arguments_raise() -> None:
    logits, labels = _random()
    with pytest.raises(ValueError, match=r"Got logits \(5, 4, 11\) and labels \(5, 3\)"):
        token_logprobs(logits, labels[:, :3])
    with pytest.raises(ValueError, match=r"`chunk_size` must be a positive number of rows. Got 0"):
        token_logprobs(logits, labels, chunk_size=0)
    with pytest.raises(ValueError, match=r"must be \[N, L, V\]. Got shape \(4, 11\)"):
        token_entropy(logits[0])
