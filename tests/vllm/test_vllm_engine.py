"""VLLMEngine against Hugging Face on a tiny fp32 Llama: log-probs, seeds, weight sync.

Needs vLLM (``make test-vllm``); skipped in the main environment. The tests share one engine
(module scope): each start costs seconds, and only one may run per process (V06).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from gradbal.rollout import HFGenerate, SamplingSettings, VLLMEngine
from tests.vllm._vllm import KV_BYTES, prompts, require_vllm, tiny_policy, trainer_logprobs

pytestmark = require_vllm()
G = 4


@pytest.fixture(scope="module")
def policy() -> Iterator[tuple[torch.nn.Module, object, VLLMEngine]]:
    model, tokenizer = tiny_policy().build()
    engine = VLLMEngine(kv_cache_memory_bytes=KV_BYTES, seed=0)
    engine.attach(model, tokenizer)
    yield model, tokenizer, engine
    engine.close()


def test_sampled_token_logprobs_match_the_trainer_within_1e_5(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    model, tokenizer, engine = policy
    ids, mask = prompts(tokenizer)
    for sampling in (
        SamplingSettings(max_new_tokens=8),
        SamplingSettings(max_new_tokens=8, temperature=0.7),
    ):
        out = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=1)
        assert out.completion_ids.shape[0] == len(ids) * G
        assert out.logprobs is not None
        expected, cmask = trainer_logprobs(
            model, tokenizer, ids, mask, out.completion_ids, G, sampling.temperature
        )
        gap = (out.logprobs - expected).abs()[cmask]
        assert gap.numel() > 0 and float(gap.max()) < 1e-5, float(gap.max())
        assert torch.all(out.logprobs[~cmask] == 0.0)
        assert out.weight_version == -1


def test_the_same_seed_draws_the_same_tokens(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    _, tokenizer, engine = policy
    ids, mask = prompts(tokenizer)
    sampling = SamplingSettings(max_new_tokens=8)
    a = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=5)
    b = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=5)
    c = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=6)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def greedy(engine: object, model: torch.nn.Module, tokenizer: object) -> tuple[torch.Tensor, ...]:
    ids, mask = prompts(tokenizer)
    sampling = SamplingSettings(max_new_tokens=10, do_sample=False)
    hf = HFGenerate(logprobs=False)
    hf.attach(model, tokenizer)  # type: ignore[arg-type]
    mine = engine.generate(ids, mask, num_completions=1, sampling=sampling)  # type: ignore[attr-defined]
    theirs = hf.generate(ids, mask, num_completions=1, sampling=sampling)
    return mine.completion_ids, theirs.completion_ids


def test_perturbed_weights_synced_give_hf_greedy_tokens(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    model, tokenizer, engine = policy
    before, _ = greedy(engine, model, tokenizer)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    stale, hf = greedy(engine, model, tokenizer)
    assert torch.equal(stale, before) and not torch.equal(stale, hf)  # not synced yet
    engine.sync_weights(model.named_parameters(), version=1)
    synced, hf = greedy(engine, model, tokenizer)
    assert torch.equal(synced, hf)
    assert engine.weight_version == 1 and len(engine.sync_seconds) == 1


def test_min_new_tokens_keeps_eos_out(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    """The token row 0 writes third greedily is made the eos: it ends row 0 early, unless
    ``min_new_tokens`` (vLLM ``min_tokens``) forbids eos before that many tokens."""
    from types import SimpleNamespace

    _, tokenizer, engine = policy
    ids, mask = prompts(tokenizer)
    cold = SamplingSettings(max_new_tokens=8, do_sample=False)
    eos = int(engine.generate(ids, mask, num_completions=1, sampling=cold).completion_ids[0, 2])
    real = engine._tokenizer
    engine._tokenizer = SimpleNamespace(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)  # type: ignore[assignment,attr-defined]
    try:
        free = engine.generate(ids, mask, num_completions=1, sampling=cold)
        forced = SamplingSettings(max_new_tokens=8, min_new_tokens=8, temperature=1.0)
        out = engine.generate(ids, mask, num_completions=G, sampling=forced, seed=3)
    finally:
        engine._tokenizer = real
    assert free.finish_reasons[0] == "stop"
    assert set(out.finish_reasons) == {"length"} and not bool((out.completion_ids == eos).any())


def test_seeded_rollouts_larger_than_one_prefill_batch(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    """More prompt tokens than one scheduler step takes (vLLM's default 2,048): with chunked
    prefill, vLLM rewinds each seeded request's generator after a partial prefill, which the
    CPU generator cannot do ("CPU Generator does not use offset"). The engine keeps prompts
    whole on the CPU, so such a rollout samples, and the same seed draws the same tokens."""
    from gradbal.modules._sequences import tokenize_prompts

    _, tokenizer, engine = policy
    texts = [f"{i:03d} " + "abcdefghij" * 24 for i in range(12)]  # 12 x ~245 byte tokens
    ids, mask = tokenize_prompts(tokenizer, texts, None, torch.device("cpu"))  # type: ignore[arg-type]
    assert int(mask.sum()) > 2048
    sampling = SamplingSettings(max_new_tokens=4)
    a = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=9)
    b = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=9)
    assert a.completion_ids.shape == (len(texts) * G, 4)
    assert torch.equal(a.completion_ids, b.completion_ids)
