"""Memory-saving settings give the fp32 baseline's GRPO loss and gradients.

On a tiny config-built Llama (saved and reloaded through ``PretrainedPolicy``, the path real
models take): gradient checkpointing and chunked log-probs change only memory, so loss and
gradients match the baseline to float32 round-off; bf16 autocast changes precision, so they
match within bf16 tolerance (log-probs stay float32).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from gradbal.models import PretrainedPolicy, TinyPolicy
from gradbal.modules._sequences import Sequences, completion_logprobs, join
from gradbal.objectives import grpo_token_loss, token_logprobs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_llama")
    model, tok = TinyPolicy(family="llama", hidden_size=64, num_layers=2, seed=0).build()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _sequences() -> Sequences:
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, 250, (4, 6), generator=g)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(3, 250, (4, 5), generator=g)
    mask = torch.ones_like(completion_ids, dtype=torch.bool)
    mask[1, 3:] = False  # a short completion
    return join(prompt_ids, prompt_mask, completion_ids, mask)


def _loss_and_grads(model: torch.nn.Module, seqs: Sequences) -> tuple[Tensor, list[Tensor]]:
    model.zero_grad(set_to_none=True)
    pi = completion_logprobs(model, seqs)  # [N, C] fp32
    assert pi.dtype == torch.float32
    advantages = torch.tensor([1.0, -0.5, 0.25, -0.75])
    out = grpo_token_loss(pi, pi.detach() - 0.01, advantages, epsilon_low=0.2, epsilon_high=0.2)
    mask = seqs.completion_mask
    loss = (out.per_token_loss * mask).sum() / mask.sum()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_gradient_checkpointing_matches_baseline(model_dir: Path) -> None:
    seqs = _sequences()
    base, _ = PretrainedPolicy(str(model_dir), dtype="float32").build()
    ckpt, _ = PretrainedPolicy(str(model_dir), dtype="float32", gradient_checkpointing=True).build()
    assert ckpt.is_gradient_checkpointing and not base.is_gradient_checkpointing
    loss, grads = _loss_and_grads(base, seqs)
    loss_c, grads_c = _loss_and_grads(ckpt, seqs)
    assert_close(loss_c, loss, rtol=1e-6, atol=1e-7)
    assert len(grads) == len(grads_c)
    for g, gc in zip(grads, grads_c, strict=True):
        assert_close(gc, g, rtol=1e-5, atol=1e-7)


def test_chunked_logprobs_match_unchunked_with_gradients(model_dir: Path) -> None:
    model, _ = PretrainedPolicy(str(model_dir), dtype="float32").build()
    logits = model(input_ids=_sequences().input_ids).logits  # [N, T, V]
    labels = _sequences().input_ids.roll(-1, dims=1)
    outs, grads = [], []
    for chunk in (1, 3, logits.shape[0]):
        leaf = logits.detach().requires_grad_()
        lp = token_logprobs(leaf, labels, chunk_size=chunk, ignore_index=None)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        outs.append(lp.detach())
        grads.append(leaf.grad)
    reference = torch.log_softmax(logits.detach(), -1).gather(-1, labels.unsqueeze(-1))[..., 0]
    for lp, g in zip(outs, grads, strict=True):
        assert_close(lp, reference, rtol=1e-6, atol=1e-6)
        assert g is not None and grads[-1] is not None
        assert_close(g, grads[-1], rtol=1e-6, atol=1e-8)


def test_bf16_autocast_is_close_to_fp32(model_dir: Path) -> None:
    seqs = _sequences()
    model, _ = PretrainedPolicy(str(model_dir), dtype="float32").build()
    model.eval()  # no dropout either way; same weights
    loss, grads = _loss_and_grads(model, seqs)
    with torch.no_grad():
        fp32_lp = completion_logprobs(model, seqs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_b, grads_b = _loss_and_grads(model, seqs)
        with torch.no_grad():
            bf16_lp = completion_logprobs(model, seqs)
    assert bf16_lp.dtype == torch.float32  # upcast before the log-softmax
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    assert not torch.equal(bf16_lp, fp32_lp)  # autocast did run the matmuls in bf16
    assert_close(bf16_lp, fp32_lp, rtol=0.0, atol=0.1)
    assert_close(loss_b, loss, rtol=0.05, atol=0.02)
    flat = torch.cat([g.flatten() for g in grads])
    flat_b = torch.cat([g.flatten() for g in grads_b])
    cosine = torch.nn.functional.cosine_similarity(flat, flat_b, dim=0)
    assert cosine > 0.99, cosine
    assert_close(flat_b.norm(), flat.norm(), rtol=0.05, atol=0.0)
