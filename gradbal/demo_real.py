"""The real-model demo (``make demo-real``): short multi-task GRPO of SmolLM2-135M-Instruct.

1. ``gradbal fit --config configs/real/grpo_demo.yaml`` (a fresh, timestamped run): LoRA GRPO
   on the four built-in chat tasks, with :class:`~gradbal.callbacks.TaskGradNormMonitor`
   estimating every task's ``||G||^2`` on the last attention block's adapters.
2. Held-out evaluation of the base model (the config's policy, freshly built) and of the trained
   one, on the same validation prompts with the same sampling seed: pass@1 over samples at the
   training temperature (what GRPO optimises), with the gain's paired standard error, and greedy
   accuracy beside it (:func:`gradbal.demo.gain_table`).
3. Each task's mean ``||G||^2`` over the measured steps, read back from the run's TensorBoard
   events (``train/grad_norm_sq_unbiased/<task>``), and the largest over the smallest.

Any GRPO config with a TaskGradNormMonitor works (``--config``); the tests use a tiny one.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from gradbal.cli import cli
from gradbal.demo import gain_table
from gradbal.evaluation import TaskEvaluation, evaluate_policy
from gradbal.metric_names import GRAD_NORM_SQ_UNBIASED, metric_name
from gradbal.models import PolicySource
from gradbal.report import read_scalars
from gradbal.tasks import TaskSource


class _Trained:
    """A :class:`~gradbal.models.PolicySource` that returns an already-built model."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase):
        self.model, self.tokenizer = model, tokenizer

    def build(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        return self.model, self.tokenizer


def grad_norm_table(
    scalars: dict[str, list[tuple[int, float]]], tasks: Sequence[str]
) -> tuple[str, float, list[str]]:
    """Markdown table of each task's mean ``||G||^2`` over the measured steps.

    ``scalars`` is :func:`gradbal.report.read_scalars` of a run with a TaskGradNormMonitor: the
    unbiased estimates it logged (``train/grad_norm_sq_unbiased/<task>``), one per measured step
    in which the task had at least 2 groups; their s.e. is over steps. The estimate is unbiased,
    not clamped, so noise can make a mean negative. A task is *resolved* when its mean is more
    than 2 s.e. above 0; only resolved tasks enter the ratio.

    Returns:
        The table, the largest resolved mean over the smallest (NaN with fewer than 2 resolved
        tasks), and the resolved tasks.

    Example::

        >>> scalars = {"train/grad_norm_sq_unbiased/a": [(0, 2.0), (1, 2.2)],
        ...            "train/grad_norm_sq_unbiased/b": [(0, 0.5), (2, 0.6)],
        ...            "train/grad_norm_sq_unbiased/c": [(1, 1.0), (2, -1.0)]}
        >>> table, ratio, resolved = grad_norm_table(scalars, ["a", "b", "c"])
        >>> round(ratio, 2), resolved
        (3.82, ['a', 'b'])
        >>> print(table.splitlines()[4])
        | c | 2 | 0.000e+00 | 1.000e+00 | within 2 s.e. of 0 |
    """
    means: dict[str, tuple[int, float, float]] = {}
    for task in tasks:
        values = torch.tensor(
            [v for _, v in scalars.get(metric_name("train", GRAD_NORM_SQ_UNBIASED, task), [])],
            dtype=torch.float64,
        )
        values = values[torch.isfinite(values)]
        n = values.numel()
        mean = float(values.mean()) if n else float("nan")
        se = float(values.std()) / math.sqrt(n) if n > 1 else float("nan")
        means[task] = (n, mean, se)
    resolved = [t for t, (n, mean, se) in means.items() if n > 1 and mean > 2 * se]
    smallest = min((means[t][1] for t in resolved), default=float("nan"))
    lines = [
        "| task | measured steps | mean ||G||^2 | s.e. | / smallest resolved |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task, (n, mean, se) in means.items():
        if task in resolved:
            relative = f"{mean / smallest:.1f}x"
        elif n > 1:
            relative = "within 2 s.e. of 0" if abs(mean) <= 2 * se else "below 0"
        else:
            relative = "too few steps"
        lines.append(f"| {task} | {n} | {mean:.3e} | {se:.3e} | {relative} |")
    largest = max((means[t][1] for t in resolved), default=float("nan"))
    ratio = largest / smallest if len(resolved) >= 2 else float("nan")
    return "\n".join(lines), ratio, resolved


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default="configs/real/grpo_demo.yaml")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt for pass@1")
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=None,
        help="held-out prompts per task (default: the config's whole validation split)",
    )
    parser.add_argument(
        "--eval-engine",
        choices=["hf", "train"],
        default="hf",
        help="what samples the evaluation: Hugging Face generate (default), or the config's "
        "rollout_engine (e.g. VLLMEngine, with configs/real/grpo_vllm.yaml)",
    )
    parser.add_argument(
        "--grpo-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the GRPO fit, repeatable, e.g. --grpo-arg=--trainer.max_steps=5",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    # A fresh run each time: without a run name a second demo would resume the first one's
    # finished run (same config, same run folder) and train nothing. Microseconds: two demos
    # started within one second (a fast tiny config) must not share a folder either.
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run = cli(
        [
            "fit",
            "--config",
            args.config,
            "--trainer.enable_progress_bar=false",
            f"--run_name=demo-real-{stamp}",
            *args.grpo_arg,
        ]
    )
    module: Any = run.model
    assert run.trainer.logger is not None and run.trainer.logger.log_dir is not None
    log_dir = str(run.trainer.logger.log_dir)
    sources: list[TaskSource] = list(run.datamodule.sources)
    t_fit = time.perf_counter() - t0

    temperature = float(module.temperature)
    settings: dict[str, Any] = {
        "max_new_tokens": int(module.max_new_tokens),
        "prompt_format": module.prompt_format,
        "max_samples_per_task": args.eval_prompts,
    }
    base: PolicySource = module.policy_source  # built afresh: the weights before training
    trained = _Trained(module.model, module.tokenizer)
    if args.eval_engine == "train":  # re-attached to each evaluated model, closed at the end
        settings["rollout_engine"] = module.rollout_engine
    scores: dict[tuple[str, str], list[TaskEvaluation]] = {}
    for name, policy in (("base", base), ("trained", trained)):
        scores[name, "sampled"] = evaluate_policy(
            policy, sources, temperature=temperature, num_samples=args.samples, **settings
        )
        scores[name, "greedy"] = evaluate_policy(policy, sources, **settings)
    module.rollout_engine.close()
    t_eval = time.perf_counter() - t0 - t_fit

    table, gain, se = gain_table(
        scores["base", "sampled"],
        scores["trained", "sampled"],
        scores["base", "greedy"],
        scores["trained", "greedy"],
        labels=("base", "GRPO"),
    )
    steps = int(run.trainer.global_step)
    print(
        f"\nHeld-out accuracy after {steps} GRPO steps, each task's own verifier. pass@1: "
        f"{args.samples} samples per prompt at temperature {temperature:g} (the training "
        f"temperature); greedy: one greedy completion; up to {settings['max_new_tokens']} new "
        "tokens. s.e.: paired over prompts.\n"
    )
    print(table)
    z = gain / se if se > 0 else float("inf")
    verdict = "clears" if z >= 2 else "does not clear"
    print(f"\nMean gain over tasks: {gain:+.1%} (s.e. {se:.1%}, {z:.1f} s.e.): {verdict} 2 s.e.")

    names = [s.name for s in sources]
    g_table, ratio, resolved = grad_norm_table(read_scalars(log_dir), names)
    print(
        "\nPer-task ||G||^2 (TaskGradNormMonitor, unbiased estimate on the measured layers, "
        "mean over measured steps, s.e. over steps):\n"
    )
    print(g_table)
    if len(resolved) >= 2:
        print(
            f"\nLargest / smallest mean ||G||^2 over the {len(resolved)} tasks whose mean is "
            f"more than 2 s.e. above 0: {ratio:.1f}x"
        )
    else:
        print(
            f"\nThe spread is not resolved: {len(resolved)} of {len(names)} tasks have a mean "
            "||G||^2 more than 2 s.e. above 0. Measure with more prompts per task in a step "
            "(larger data.batch_size) or more measured steps."
        )
    print(
        f"\nWall time: GRPO fit {t_fit:.0f} s ({steps} steps), evaluation {t_eval:.0f} s, "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    print(f"TensorBoard logs: {log_dir}")


if __name__ == "__main__":
    main()
