"""What drawing a token costs: ``torch.multinomial`` (HF ``generate``'s sampler) against
``inverse_cdf_sample`` (``HFGenerate(sampler="inverse_cdf")``), alone and inside generation.

1. The draw alone: ``[rows, vocab]`` probabilities (default 16 x 49,152, SmolLM2's vocabulary),
   both samplers alternating, median over ``--repeats`` calls.
2. Inside generation (``--model smollm2``): ``HFGenerate.generate`` on SmolLM2-135M-Instruct
   (fp32, no LoRA) for 4 chat prompts of the four chat tasks x 4 completions of up to 48 tokens
   at T 0.7, as ``benchmarks/vs_trl.py --model smollm2`` samples; the two engines alternate with
   the same seeds. The samplers draw different tokens, so the batches run for different
   numbers of decode steps: the table gives seconds per decode step (the generate call's time
   over its number of generated columns) besides the call's time.

Both parts run in one process with the same threads; ratios are per repeat (paired), medians
reported::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sampler_cost.py --threads 2 --repeats 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gradbal.rollout import HFGenerate, SamplingSettings, inverse_cdf_sample


def draw_cost(rows: int, vocab: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each sampler on the same softmax probabilities (alternating)."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(rows, vocab, generator=gen) * 3 / 0.7, dim=-1)
    calls = {
        "multinomial": lambda: torch.multinomial(probs, 1),
        "inverse_cdf": lambda: inverse_cdf_sample(probs),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats + 2):
        for name in calls if i % 2 == 0 else list(calls)[::-1]:
            start = time.perf_counter()
            calls[name]()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return times


def generation_cost(repeats: int) -> dict[str, list[tuple[float, int, float]]]:
    """Per sampler and repeat: (generate seconds, decode steps, mean completion length)."""
    from gradbal.models import PretrainedPolicy
    from gradbal.modules._sequences import completion_mask, format_prompts, tokenize_prompts
    from gradbal.tasks import ChatAddition, ChatComparison, ChatMultiplication, ChatWordProblem

    model, tokenizer = PretrainedPolicy("smollm2-135m-instruct", dtype="float32").build()
    tasks = [c(n_train=4, n_val=1).load() for c in (ChatAddition, ChatMultiplication)]
    tasks += [c(n_train=4, n_val=1).load() for c in (ChatComparison, ChatWordProblem)]
    prompts = [task.train[0]["prompt"] for task in tasks]
    ids, mask = tokenize_prompts(
        tokenizer, format_prompts(tokenizer, prompts, "auto"), None, torch.device("cpu")
    )
    engines = {name: HFGenerate(sampler=name) for name in ("multinomial", "inverse_cdf")}
    for engine in engines.values():
        engine.attach(model, tokenizer)
    settings = SamplingSettings(max_new_tokens=48, temperature=0.7)
    eos = tokenizer.eos_token_id
    out: dict[str, list[tuple[float, int, float]]] = {name: [] for name in engines}
    for i in range(repeats + 1):
        for name in engines if i % 2 == 0 else list(engines)[::-1]:
            start = time.perf_counter()
            batch = engines[name].generate(
                ids, mask, num_completions=4, sampling=settings, seed=1000 + i
            )
            seconds = time.perf_counter() - start
            completion = batch.completion_ids
            lengths = completion_mask(completion, eos)[0].sum(1)
            if i >= 1:  # the first round warms up
                out[name].append((seconds, completion.shape[1], float(lengths.float().mean())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument(
        "--model", choices=("smollm2", "none"), default="smollm2", help="'none': the draw only"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    draws = draw_cost(args.rows, args.vocab, max(args.repeats, 20))
    base = draws["multinomial"]
    print(f"\n### The draw alone: {args.rows} rows x {args.vocab} categories\n")
    print("| sampler | median ms per call | paired vs multinomial |")
    print("| --- | ---: | ---: |")
    for name, times in draws.items():
        ratio = statistics.median(t / b for t, b in zip(times, base, strict=True))
        print(f"| {name} | {1000 * statistics.median(times):.2f} | {ratio:.3f}x |")
    if args.model == "none":
        return
    runs = generation_cost(args.repeats)
    print(
        "\n### Inside generation: SmolLM2-135M-Instruct, 4 prompts x 4 completions, <= 48 new "
        f"tokens, T 0.7, median of {args.repeats}\n"
    )
    print(
        "| sampler | generate s | decode steps | ms per decode step | paired vs multinomial "
        "(per step) | mean completion tokens |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base_runs = runs["multinomial"]
    for name, rows in runs.items():
        per_step = [s / steps for s, steps, _ in rows]
        base_step = [s / steps for s, steps, _ in base_runs]
        ratio = statistics.median(a / b for a, b in zip(per_step, base_step, strict=True))
        print(
            f"| {name} | {statistics.median(r[0] for r in rows):.2f} | "
            f"{statistics.median(r[1] for r in rows):.0f} | "
            f"{1000 * statistics.median(per_step):.1f} | {ratio:.3f}x | "
            f"{statistics.fmean(r[2] for r in rows):.1f} |"
        )


if __name__ == "__main__":
    main()
