"""VLLMEngine with a LoRA policy (both sync modes) and in gradbal.evaluation.

Needs vLLM (``make test-vllm``); skipped in the main environment. Each test starts and closes
its own engine (one vLLM per process at a time, V06).
"""

from __future__ import annotations

import pytest
import torch

from gradbal.models import LoRA
from gradbal.rollout import SamplingSettings, VLLMEngine
from tests.vllm._vllm import KV_BYTES, prompts, require_vllm, tiny_policy, trainer_logprobs
from tests.vllm.test_vllm_engine import G, greedy

pytestmark = require_vllm()


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
