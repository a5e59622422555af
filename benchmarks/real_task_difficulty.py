"""Held-out pass@1 of the shipped SmolLM2-135M-Instruct on the built-in chat tasks.

Each chat task should start inside the model's reach (pass@1 between 10% and 80%), so that GRPO
has both rewarded and unrewarded samples in most groups. Per task, on the first ``--n``
validation prompts (held out from training), formatted with the model's chat template exactly
as ``GRPOModule`` does (``prompt_format="auto"``):

* greedy pass@1: the greedy reply is correct (reward >= the task's success threshold);
* sampled pass@1: the mean over ``--samples`` sampled replies per prompt (``--temperature``,
  the rollout temperature of configs/real/grpo_multitask.yaml);
* answer form: the share of sampled replies in the asked-for form (a bare number, or a marked
  answer), i.e. :class:`~gradbal.tasks.AnswerFormat`.

Single-threaded on CPU; the model is converted from its GGUF file on first use.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_task_difficulty.py --n 30
"""

from __future__ import annotations

import argparse
import time

import torch

from gradbal.models import PretrainedPolicy
from gradbal.modules._generation import decode, generate
from gradbal.modules._sequences import completion_mask, format_prompts, tokenize_prompts
from gradbal.tasks import (
    AnswerFormat,
    ChatAddition,
    ChatComparison,
    ChatMultiplication,
    ChatSequence,
    ChatWordProblem,
    Task,
    score,
)

TASKS = (ChatAddition, ChatComparison, ChatMultiplication, ChatSequence, ChatWordProblem)


def replies(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    *,
    greedy: bool,
    samples: int,
    tokens: int,
    temperature: float = 1.0,
) -> list[str]:
    ids, mask = tokenize_prompts(
        tokenizer, format_prompts(tokenizer, prompts, "auto"), None, torch.device("cpu")
    )
    out = generate(
        model,
        tokenizer,
        ids,
        mask,
        max_new_tokens=tokens,
        num_return_sequences=1 if greedy else samples,
        do_sample=not greedy,
        temperature=temperature,
    )
    counted, _ = completion_mask(out, tokenizer.eos_token_id)
    return decode(tokenizer, out, counted)


def pass_at_1(task: Task, prompts: list[str], texts: list[str], answers: list[str]) -> float:
    rewards = score(task, prompts, texts, [{} for _ in texts], answers=answers)
    return sum(r >= task.success_threshold for r in rewards) / len(rewards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30, help="held-out prompts per task")
    parser.add_argument("--samples", type=int, default=2, help="sampled replies per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks", nargs="*", default=None, help="class names to run (default: all)"
    )
    parser.add_argument("--show", type=int, default=2, help="example replies printed per task")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model, tokenizer = PretrainedPolicy("smollm2-135m-instruct").build()
    print(f"model loaded in {time.perf_counter() - start:.1f} s")
    rows = []
    for cls in [c for c in TASKS if args.tasks is None or c.__name__ in args.tasks]:
        task = cls(n_train=1, n_val=args.n).load()
        prompts = list(task.validation["prompt"])
        answers = list(task.validation["answer"])
        start = time.perf_counter()
        greedy = replies(
            model, tokenizer, prompts, greedy=True, samples=1, tokens=args.max_new_tokens
        )
        sampled = replies(
            model,
            tokenizer,
            prompts,
            greedy=False,
            samples=args.samples,
            tokens=args.max_new_tokens,
            temperature=args.temperature,
        )
        rep_prompts = [p for p in prompts for _ in range(args.samples)]
        rep_answers = [a for a in answers for _ in range(args.samples)]
        marked = sum(AnswerFormat()(rep_prompts, sampled)) / len(sampled)
        rows.append(
            (
                task.name,
                pass_at_1(task, prompts, greedy, answers),
                pass_at_1(task, rep_prompts, sampled, rep_answers),
                marked,
                time.perf_counter() - start,
            )
        )
        for p, g, a in list(zip(prompts, greedy, answers, strict=True))[: args.show]:
            print(f"  [{task.name}] {p!r} -> {g!r} (answer {a})")
    print(
        f"\n{args.n} held-out prompts per task, {args.samples} samples each, "
        f"max_new_tokens={args.max_new_tokens}, temperature={args.temperature}"
    )
    print("| task | greedy pass@1 | sampled pass@1 | answer form | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name, g, s, m, sec in rows:
        print(f"| {name} | {g:.0%} | {s:.0%} | {m:.0%} | {sec:.0f} |")


if __name__ == "__main__":
    main()
