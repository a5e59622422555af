"""Shared set-up of the vLLM tests: skipped (or failed, under ``make test-vllm``) without vLLM.

The tests need the separate environment ``make setup-vllm`` builds (``.venv-vllm``); ``make
test-vllm`` runs them there with ``GRADBAL_REQUIRE_VLLM=1``, so a broken install fails instead of
skipping. In the main environment they are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from gradbal.models import TinyPolicy
from gradbal.modules._sequences import completion_logprobs, completion_mask, join, tokenize_prompts

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
REASON = (
    "vLLM is not installed in this environment; it lives in .venv-vllm: run `make test-vllm` "
    "(it builds the environment with `make setup-vllm` first)"
)


def require_vllm() -> pytest.MarkDecorator:
    """``pytestmark`` of every vLLM test module."""
    if not HAVE_VLLM and os.environ.get("GRADBAL_REQUIRE_VLLM") == "1":
        raise RuntimeError(f"GRADBAL_REQUIRE_VLLM=1 but {REASON}.")
    return pytest.mark.skipif(not HAVE_VLLM, reason=REASON)


#: vLLM's CPU attention needs a head dimension of at least 64: hidden 128 with 2 heads.
def tiny_policy(**kwargs: object) -> TinyPolicy:
    return TinyPolicy(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, **kwargs)  # type: ignore[arg-type]


#: Small KV cache (bytes): the tiny model's rollouts need a few MiB.
KV_BYTES = 32 * 2**20
PROMPTS = ["add 12+34=", "a longer prompt: rev abcdef=", "cd 3 5 7>22="]


def prompts(tokenizer: object, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return tokenize_prompts(tokenizer, PROMPTS, None, torch.device(device))  # type: ignore[arg-type]


def trainer_logprobs(
    model: torch.nn.Module,
    tokenizer: object,
    ids: torch.Tensor,
    mask: torch.Tensor,
    completion_ids: torch.Tensor,
    g: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's log-probs of ``completion_ids`` (teacher-forced) and their mask."""
    cmask, _ = completion_mask(completion_ids, tokenizer.eos_token_id)  # type: ignore[attr-defined]
    seqs = join(ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0), completion_ids, cmask)
    with torch.no_grad():
        return completion_logprobs(model.eval(), seqs, temperature), cmask
