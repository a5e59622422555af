"""Sharing each prompt's prefill across its completions samples exactly the same tokens."""

from __future__ import annotations

import pytest
import torch

from gradbal.models import LoRA, TinyPolicy
from gradbal.models.kv_cache import can_share_prefix
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
    # the shared path is taken (a peft wrapper included: it passes the cache to its base model)
    assert can_share_prefix(model, ids.shape[1])
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


class _PlainForward(torch.nn.Module):
    """A custom model whose forward takes no ``cache``/``logits_to_keep`` (remote-code style)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    def generate(self, **kwargs: object) -> torch.Tensor:
        return self.inner.generate(**kwargs)  # type: ignore[no-any-return,operator]


def test_models_without_cache_arguments_fall_back_to_plain_generation() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1, seed=2).build()
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))
    outs = []
    for wrapped, share in ((model, False), (_PlainForward(model), True)):
        with step_rng(3, step=0, rank=0):
            outs.append(
                generate(
                    wrapped,
                    tok,
                    ids,
                    mask,
                    max_new_tokens=5,
                    num_return_sequences=2,
                    share_prefill=share,
                )
            )
    assert torch.equal(outs[0], outs[1])


def test_the_cache_is_passed_by_the_name_the_model_takes() -> None:
    """transformers < 5.2x takes ``past_key_values``, later versions ``cache``; a custom model
    may take neither (then no shared prefill)."""
    from gradbal.models.kv_cache import cache_argument

    model, _ = TinyPolicy(hidden_size=32, num_layers=1, seed=2).build()
    assert cache_argument(model) in {"cache", "past_key_values"}

    class OldStyle(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, past_key_values: object = None) -> None: ...

    assert cache_argument(OldStyle()) == "past_key_values"
    assert cache_argument(_PlainForward(model)) is None
