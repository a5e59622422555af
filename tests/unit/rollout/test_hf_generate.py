"""HFGenerate samples exactly what gradbal sampled before the engine interface (same seed)."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from gradbal.models import LoRA, TinyPolicy
from gradbal.modules._generation import generate, step_rng
from gradbal.modules._sequences import tokenize_prompts
from gradbal.rollout import HFGenerate, SamplingSettings, mix_seed

PROMPTS = ["add 12+34=", "a longer prompt: rev abcdef=", "cd 3 5 7>22="]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize(("top_k", "top_p", "lora"), [(None, 1.0, False), (20, 0.9, True)])
def test_engine_tokens_equal_the_old_function_and_plain_generate(
    family: Literal["llama", "gpt2"], top_k: int | None, top_p: float, lora: bool
) -> None:
    policy = TinyPolicy(
        hidden_size=32, num_layers=2, family=family, seed=1, lora=LoRA(r=2) if lora else None
    )
    model, tok = policy.build()
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))
    settings = SamplingSettings(max_new_tokens=7, temperature=0.9, top_k=top_k, top_p=top_p)
    engine = HFGenerate()
    engine.attach(model, tok)
    new = engine.generate(ids, mask, num_completions=4, sampling=settings, seed=mix_seed(5, 2, 0))
    with step_rng(5, step=2, rank=0):  # how GRPOModule sampled before the engine interface
        old = generate(
            model, tok, ids, mask, max_new_tokens=7, num_return_sequences=4, temperature=0.9,
            top_k=top_k, top_p=top_p,
        )  # fmt: skip
    with step_rng(5, step=2, rank=0):  # transformers alone: no shared prefill, no processors
        plain = model.generate(  # type: ignore[operator]
            input_ids=ids, attention_mask=mask, max_new_tokens=7, num_return_sequences=4,
            do_sample=True, temperature=0.9, top_k=top_k or 0, top_p=top_p,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )[:, ids.shape[1] :]  # fmt: skip
    assert torch.equal(new.completion_ids, old)
    assert torch.equal(new.completion_ids, plain)
    assert len(set(map(tuple, new.completion_ids.tolist()))) > 1  # it sampled, not greedy
    without = HFGenerate(logprobs=False)
    without.attach(model, tok)
    again = without.generate(
        ids, mask, num_completions=4, sampling=settings, seed=mix_seed(5, 2, 0)
    )
    assert again.logprobs is None and torch.equal(again.completion_ids, new.completion_ids)


def test_a_seed_leaves_the_global_rng_alone_and_none_uses_it() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1, seed=2).build()
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))
    engine = HFGenerate()
    engine.attach(model, tok)
    settings = SamplingSettings(max_new_tokens=5)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = engine.generate(ids, mask, num_completions=2, sampling=settings, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = engine.generate(ids, mask, num_completions=2, sampling=settings, seed=3)
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.manual_seed(3)
    c = engine.generate(ids, mask, num_completions=2, sampling=settings, seed=None)
    assert torch.equal(a.completion_ids, c.completion_ids)
    assert not torch.equal(torch.random.get_rng_state(), before)
