"""Sharing each prompt's prefill across its completions samples exactly the same tokens."""

from __future__ import annotations

import pytest
import torch

from gradbal.models import LoRA, TinyPolicy
from gradbal.modules._generation import generate, step_rng
from gradbal.modules._sequences import tokenize_prompts

PROMPTS = ["add 12+34=", "a longer prompt: rev abcdef=", "cd 3 5 7>22="]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefill_samples_the_same_tokens(family: str, lora: bool) -> None:
    policy = TinyPolicy(
        hidden_size=32, num_layers=2, family=family, seed=1, lora=LoRA(r=2) if lora else None
    )  # type: ignore[arg-type]
    model, tok = policy.build()
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))  # left-padded
    outs = []
    for share in (False, True):
        with step_rng(7, step=0, rank=0):
            outs.append(
                generate(
                    model,
                    tok,
                    ids,
                    mask,
                    max_new_tokens=6,
                    num_return_sequences=4,
                    top_k=20,
                    share_prefill=share,
                )
            )
    assert outs[0].shape == (len(PROMPTS) * 4, 6)
    assert torch.equal(outs[0], outs[1])
