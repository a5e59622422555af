"""Tiny models, per-row losses and brute-force per-segment gradients for the gradstats tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 50


def tiny_model(family: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A 2-layer, hidden-32 causal LM of the given family, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64}
    common |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    model: nn.Module
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, max_position_embeddings=64))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, max_position_embeddings=64))
    elif family == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        config.bos_token_id = config.eos_token_id = 0
        config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(family)
    with torch.no_grad():  # non-zero biases, so bias gradients are tested with real values
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)
    return model.to(dtype).eval()


def batch(num_rows: int, length: int = 7, seed: int = 1) -> Tensor:
    return torch.randint(
        0, VOCAB, (num_rows, length), generator=torch.Generator().manual_seed(seed)
    )


def row_losses(model: nn.Module, input_ids: Tensor) -> Tensor:
    """``[N]`` summed next-token cross-entropy of each row."""
    logits = model(input_ids=input_ids).logits[:, :-1]  # [N, T-1, V]
    per_token = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none"
    )
    return per_token.view(input_ids.shape[0], -1).sum(1)  # [N]


def brute_force_shares(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], num_segments: int, names: list[str]
) -> dict[str, Tensor]:
    """Per-segment gradients ``{name: [S, *shape]}`` by one ``autograd.grad`` per segment.

    ``batches`` holds ``(input_ids, segments)`` micro-batches; their shares are summed.
    """
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    out = {
        n: torch.zeros(num_segments, *p.shape, dtype=torch.float64)
        for n, p in zip(names, chosen, strict=True)
    }
    for input_ids, segments in batches:
        losses = row_losses(model, input_ids)
        for s in range(num_segments):
            if not bool((segments == s).any()):
                continue
            grads = torch.autograd.grad(
                losses[segments == s].sum(), chosen, retain_graph=True, allow_unused=True
            )
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    out[n][s] += g.double()
    return out


def gram_of(shares: dict[str, Tensor]) -> Tensor:
    flat = torch.cat([s.flatten(1).double() for s in shares.values()], dim=1)  # [S, P]
    return flat @ flat.T
