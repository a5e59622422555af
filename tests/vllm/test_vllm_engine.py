"""VLLMEngine against Hugging Face on a tiny fp32 Llama: log-probs, weight sync, LoRA.

Needs vLLM (``make test-vllm``); skipped in the main environment. One engine per test module
scope where the test allows it: each start costs seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from gradbal.models import LoRA
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


def test_the_batch_meets_the_engine_contract_with_stop_and_length_rows(
    policy: tuple[torch.nn.Module, object, VLLMEngine],
) -> None:
    """tests/unit/rollout/test_engine_contract.py's checks; eos is kept in the row (``stop``),
    then padding with log-prob 0. The random model rarely writes eos, so a second engine uses
    a tokenizer whose eos is the token it writes most: both finish reasons then occur."""
    import copy

    from tests.unit.rollout.test_engine_contract import check_contract

    model, tokenizer, engine = policy
    ids, mask = prompts(tokenizer)
    sampling = SamplingSettings(max_new_tokens=24)
    first = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=0)
    check_contract(first, len(ids) * G, 24, tokenizer.eos_token_id)  # type: ignore[attr-defined]
    frequent = int(torch.mode(first.completion_ids.flatten()).values)
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tok.convert_ids_to_tokens(frequent)  # type: ignore[attr-defined]
    other = VLLMEngine(kv_cache_memory_bytes=KV_BYTES)
    other.attach(model, tok)  # type: ignore[arg-type]
    try:
        out = other.generate(ids, mask, num_completions=G, sampling=sampling, seed=0)
    finally:
        other.close()
    check_contract(out, len(ids) * G, 24, frequent)
    assert {"stop", "length"} <= set(out.finish_reasons), out.finish_reasons
    assert out.logprobs is not None
    for row, lps, reason in zip(out.completion_ids, out.logprobs, out.finish_reasons, strict=True):
        if reason == "stop":
            end = int((row == frequent).nonzero()[0]) + 1
            assert torch.all(row[end:] == tok.pad_token_id)  # type: ignore[attr-defined]
            assert torch.all(lps[end:] == 0.0) and torch.all(lps[:end] < 0.0)


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


@pytest.mark.parametrize("lora_sync", ["merge", "adapter"])
def test_lora_policy_matches_peft(lora_sync: str) -> None:
    model, tokenizer = tiny_policy(lora=LoRA(r=4, alpha=8, target_modules="all-linear")).build()
    engine = VLLMEngine(lora_sync=lora_sync, kv_cache_memory_bytes=KV_BYTES)  # type: ignore[arg-type]
    engine.attach(model, tokenizer)
    try:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # LoRA's B starts at 0: give the adapters a visible effect
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        base_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
        engine.sync_weights(model.named_parameters(), version=0)
        synced, hf = greedy(engine, model, tokenizer)
        assert torch.equal(synced, hf)
        ids, mask = prompts(tokenizer)
        out = engine.generate(
            ids, mask, num_completions=G, sampling=SamplingSettings(max_new_tokens=8), seed=2
        )
        assert out.logprobs is not None
        expected, cmask = trainer_logprobs(model, tokenizer, ids, mask, out.completion_ids, G)
        gap = (out.logprobs - expected).abs()[cmask]
        assert float(gap.max()) < (1e-5 if lora_sync == "merge" else 1e-4), float(gap.max())
        for n, p in model.named_parameters():  # the trainer's frozen base is left untouched
            if n in base_before:
                assert torch.equal(p, base_before[n]), n
    finally:
        engine.close()


def test_evaluate_policy_runs_on_the_engine_like_hf() -> None:
    """gradbal.evaluation with a VLLMEngine: greedy scores equal HF generate's."""
    from gradbal.evaluation import evaluate_policy
    from gradbal.tasks import Addition

    tasks = [Addition(n_train=5, n_val=6)]
    engine = VLLMEngine(kv_cache_memory_bytes=KV_BYTES)
    try:
        ours = evaluate_policy(tiny_policy(), tasks, max_new_tokens=6, rollout_engine=engine)
    finally:
        engine.close()
    theirs = evaluate_policy(tiny_policy(), tasks, max_new_tokens=6)
    assert [r.task for r in ours] == ["addition"]
    assert torch.equal(ours[0].correct, theirs[0].correct)
