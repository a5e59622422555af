"""Do VLLMEngine and HFGenerate sample completions of the same length at the same weights?

SmolLM2-135M-Instruct (fp32, no LoRA), 8 chat prompts (2 of each chat task) x ``--completions``
completions of up to ``--max-new-tokens`` tokens at T 0.7, from both engines, several seeds.
Prints, per engine, the mean completion length (tokens up to and including ``<|im_end|>``), its
standard error over completions, and the share that hit the cap. Run in the vLLM environment::

    LD_PRELOAD="$(.venv-vllm/bin/python -m gradbal.rollout.vllm_env --preload)" \\
        .venv-vllm/bin/python benchmarks/engine_lengths.py
"""

from __future__ import annotations

import argparse
import statistics

import torch


def lengths_of(ids: torch.Tensor, eos: int) -> list[int]:
    """Tokens up to and including the first eos (all of a row without one)."""
    from gradbal.modules._sequences import completion_mask

    return completion_mask(ids, eos)[0].sum(1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gradbal.models import PretrainedPolicy
    from gradbal.modules._sequences import format_prompts, tokenize_prompts
    from gradbal.rollout import HFGenerate, SamplingSettings, VLLMEngine
    from gradbal.tasks import ChatAddition, ChatComparison, ChatMultiplication, ChatWordProblem

    model, tokenizer = PretrainedPolicy("smollm2-135m-instruct", dtype="float32").build()
    classes = (ChatAddition, ChatMultiplication, ChatComparison, ChatWordProblem)
    prompts = [c(n_train=2, n_val=1).load().train[i]["prompt"] for c in classes for i in range(2)]
    ids, mask = tokenize_prompts(
        tokenizer, format_prompts(tokenizer, prompts, "auto"), None, torch.device("cpu")
    )
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=0.7)
    engines = {
        "hf": HFGenerate(logprobs=False),
        "vllm": VLLMEngine(kv_cache_memory_bytes=512 * 2**20, max_model_len=1024, seed=0),
    }
    eos = tokenizer.eos_token_id
    print(
        f"{len(prompts)} prompts x {args.completions} completions x {args.seeds} seeds, "
        f"<= {args.max_new_tokens} new tokens, T 0.7"
    )
    print("| engine | completions | mean length | s.e. | hit the cap |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, engine in engines.items():
        engine.attach(model, tokenizer)
        found: list[int] = []
        for seed in range(args.seeds):
            out = engine.generate(
                ids, mask, num_completions=args.completions, sampling=settings, seed=seed
            )
            found += lengths_of(out.completion_ids, eos)
        capped = sum(x == args.max_new_tokens for x in found) / len(found)
        se = statistics.stdev(found) / len(found) ** 0.5
        print(
            f"| {name} | {len(found)} | {statistics.fmean(found):.1f} | {se:.1f} | {capped:.0%} |"
        )
        engine.close()


if __name__ == "__main__":
    main()
