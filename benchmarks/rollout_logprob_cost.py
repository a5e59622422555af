"""What recording sampled-token log-probs costs HFGenerate: generate time with and without.

A Llama-style policy with SmolLM2's vocabulary size (49,152) and a small body (hidden 128,
2 layers), the worst case for the per-token ``logsumexp`` over the vocabulary relative to the
model's own work (real 135M+ models spend far more per token in their layers). B=4 prompts x
G=8 completions, 32 new tokens, one thread; modes alternate and the median of the repeats is
reported, since the machine is shared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rollout_logprob_cost.py
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gradbal.models.tokenizer import byte_level_tokenizer
from gradbal.modules._sequences import tokenize_prompts
from gradbal.rollout import HFGenerate, SamplingSettings

REPEATS = 5
VOCAB = 49_152


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=10_000,  # not written by chance: every row runs to max_new_tokens
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    prompts = ["add 12+34=", "a longer prompt: rev abcdef=", "cd 3 5 7>22=", "sort 9 1 4="]
    ids, mask = tokenize_prompts(tok, prompts, None, torch.device("cpu"))
    print("| sampling | logprobs off (s) | logprobs on (s) | overhead |")
    print("|---|---|---|---|")
    for name, sampling in (
        ("T=1", SamplingSettings(max_new_tokens=32)),
        ("T=0.7, top_p=0.9", SamplingSettings(max_new_tokens=32, temperature=0.7, top_p=0.9)),
    ):
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(REPEATS):
            for logprobs in (False, True):
                engine = HFGenerate(logprobs=logprobs)
                engine.attach(model, tok)
                start = time.perf_counter()
                out = engine.generate(ids, mask, num_completions=8, sampling=sampling, seed=1)
                times[logprobs].append(time.perf_counter() - start)
                assert out.completion_ids.shape == (32, 32)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {off:.3f} | {on:.3f} | {100 * (on / off - 1):+.1f}% |")


if __name__ == "__main__":
    main()
