"""The offline demo (``make demo``): SFT warm start, then multi-task GRPO, then the table.

1. ``gradbal fit --config configs/toy/sft_warmstart.yaml``: a tiny model learns the built-in
   tasks from reference answers and is saved with ``save_pretrained``.
2. Greedy evaluation of that model on the held-out prompts of every task.
3. ``gradbal fit --config configs/toy/grpo_multitask.yaml``: multi-task GRPO from the warm start.
4. The same evaluation again, and a table of per-task accuracy before and after GRPO: pass@1
   over samples at the training temperature (what GRPO optimises) with the gain's paired
   standard error, and greedy accuracy beside it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from gradbal.cli import cli
from gradbal.evaluation import TaskEvaluation, evaluate_policy
from gradbal.models import PretrainedPolicy
from gradbal.tasks import TaskSource


def fit(config: str, extra: Sequence[str]) -> tuple[list[TaskSource], str]:
    """Run ``gradbal fit --config config``; return its task sources and TensorBoard dir."""
    run = cli(["fit", "--config", config, *extra])
    assert run.trainer.logger is not None
    return list(run.datamodule.sources), str(run.trainer.logger.log_dir)


def gain_table(
    before: list[TaskEvaluation],
    after: list[TaskEvaluation],
    greedy_before: list[TaskEvaluation],
    greedy_after: list[TaskEvaluation],
    labels: tuple[str, str] = ("SFT", "GRPO"),
) -> tuple[str, float, float]:
    """Markdown table; returns it with the mean gain over tasks and that mean's standard error.

    The gain is in sampled pass@1 (the quantity GRPO's reward optimises); its standard error is
    paired over prompts (the same prompts are scored before and after). ``labels`` name the
    models before and after in the column headers.
    """
    b_, a_ = labels
    lines = [
        f"| task | prompts | {b_} pass@1 | {a_} pass@1 | gain | s.e. | {b_} greedy | {a_} greedy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    gains, variances = [], []
    for b, a, gb, ga in zip(before, after, greedy_before, greedy_after, strict=True):
        diff = a.correct.float() - b.correct.float()  # per prompt
        n = diff.numel()
        se = float(diff.std()) / math.sqrt(n)
        gains.append(float(diff.mean()))
        variances.append(se**2)
        lines.append(
            f"| {a.task} | {n} | {b.accuracy:.1%} | {a.accuracy:.1%} | {gains[-1]:+.1%} | "
            f"{se:.1%} | {gb.accuracy:.1%} | {ga.accuracy:.1%} |"
        )
    mean_gain = sum(gains) / len(gains)
    mean_se = math.sqrt(sum(variances)) / len(variances)

    def mean(rs: list[TaskEvaluation]) -> float:
        return sum(r.accuracy for r in rs) / len(rs)

    lines.append(
        f"| **mean** | | {mean(before):.1%} | {mean(after):.1%} | {mean_gain:+.1%} | "
        f"{mean_se:.1%} | {mean(greedy_before):.1%} | {mean(greedy_after):.1%} |"
    )
    return "\n".join(lines), mean_gain, mean_se


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sft-config", default="configs/toy/sft_warmstart.yaml")
    parser.add_argument("--grpo-config", default="configs/toy/grpo_multitask.yaml")
    parser.add_argument("--sft-model", default="runs/demo/sft_model")
    parser.add_argument("--grpo-model", default="runs/demo/grpo_model")
    parser.add_argument("--skip-sft", action="store_true", help="reuse an existing --sft-model")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt for pass@1")
    parser.add_argument(
        "--grpo-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the GRPO fit, repeatable, e.g. "
        "--grpo-arg=--model.init_args.scale_rewards=group",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    logs = []
    # Each demo is a new run: without a run name a second `make demo` would resume the first
    # demo's finished runs (same configs, same run folders) and train nothing.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not (args.skip_sft and Path(args.sft_model).exists()):
        _, sft_log = fit(
            args.sft_config, ["--trainer.enable_progress_bar=false", f"--run_name=demo-sft-{stamp}"]
        )
        logs.append(sft_log)
    t_sft = time.perf_counter() - t0
    sources, grpo_log = fit(
        args.grpo_config,
        ["--trainer.enable_progress_bar=false", f"--run_name=demo-grpo-{stamp}", *args.grpo_arg],
    )
    logs.append(grpo_log)
    t_grpo = time.perf_counter() - t0 - t_sft
    sampled = {"temperature": 1.0, "num_samples": args.samples}
    scores = {
        (model, mode): evaluate_policy(
            PretrainedPolicy(model),
            sources,
            max_new_tokens=args.max_new_tokens,
            **(sampled if mode == "sampled" else {}),
        )
        for model in (args.sft_model, args.grpo_model)
        for mode in ("sampled", "greedy")
    }
    table, gain, se = gain_table(
        scores[args.sft_model, "sampled"],
        scores[args.grpo_model, "sampled"],
        scores[args.sft_model, "greedy"],
        scores[args.grpo_model, "greedy"],
    )
    print(
        f"\nHeld-out accuracy, each task's own verifier. pass@1: {args.samples} samples per "
        "prompt at temperature 1 (the training temperature); greedy: one greedy completion.\n"
    )
    print(table)
    print(
        f"\nMean gain over tasks: {gain:+.1%} (s.e. {se:.1%}, {gain / se if se else float('inf'):.1f} s.e.)"
    )
    print(
        f"Wall time: SFT {t_sft:.0f} s, GRPO {t_grpo:.0f} s, total {time.perf_counter() - t0:.0f} s"
    )
    print("TensorBoard logs:", *logs, sep="\n  ")
    print(f"View them with: .venv/bin/tensorboard --logdir {Path(logs[-1]).parents[2]}")


if __name__ == "__main__":
    main()
