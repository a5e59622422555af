"""The paper's imbalance study on the built-in tasks: uniform vs gradient-proportional vs
inverse-gradient task sampling, several seeds, multi-task GRPO from the SFT warm start.

Wu et al. (arXiv 2510.19178) report that in multi-task GRPO some tasks' squared gradient norms
are many times larger than others', that those tasks do not gain more, that sampling tasks in
proportion to their gradient does not help on average, and that the imbalance is not explained by
training reward, mean absolute advantage or completion length. This script measures each claim on
gradbal's five built-in tasks.

Every run is configs/toy/grpo_balanced.yaml (same warm start, tasks, optimiser, GRPO settings
and step count) with only the sampling rule, the seeds and the output paths changed:

* ``uniform``: ``Uniform()``: p_k = 1/K (the gradient monitor still measures every 5th step);
* ``grad_proportional``: ``GradProportional(power=2)``: p_k ∝ ||G_k||^2 (the paper's reading);
* ``inverse_grad``: ``InverseGradNorm(power=1)``: p_k ∝ 1/||G_k||.

Per run it reads the TensorBoard events (``gradbal.report.read_scalars``) and scores the saved
model on every task's 200 validation prompts (sampled pass@1, 4 samples at T=1, as ``make demo``).
Runs are subprocesses of ``gradbal fit``; a finished run (its model directory exists) is reused,
so an interrupted study continues where it stopped.

    .venv/bin/python benchmarks/imbalance_study.py                 # 3 strategies x 3 seeds
    .venv/bin/python benchmarks/imbalance_study.py --seeds 0 --steps 100   # a quick look

Needs runs/demo/sft_model (``make demo``, or ``gradbal fit --config
configs/toy/sft_warmstart.yaml``). Writes ``<out>/study.md`` and ``<out>/study.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from gradbal.evaluation import evaluate_policy
from gradbal.gradstats import spearman
from gradbal.models import PretrainedPolicy
from gradbal.report import read_scalars

BASE_CONFIG = Path("configs/toy/grpo_balanced.yaml")
RULES: dict[str, dict[str, Any]] = {
    "uniform": {"class_path": "gradbal.weighting.Uniform"},
    "grad_proportional": {
        "class_path": "gradbal.weighting.GradProportional",
        "init_args": {"power": 2.0},
    },
    "inverse_grad": {
        "class_path": "gradbal.weighting.InverseGradNorm",
        "init_args": {"power": 1.0},
    },
}
GAIN_FRACTION = 0.2  # learning gain: mean train reward of the last 20% of steps minus the first


def run_config(strategy: str, seed: int, steps: int, out: Path, sft_model: str) -> Path:
    """Write the run's YAML: the base config with this strategy's rule, seeds and paths."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    root = out / f"{strategy}_s{seed}"
    config["seed_everything"] = seed
    config["trainer"]["max_steps"] = steps
    config["trainer"]["default_root_dir"] = str(root)
    config["trainer"]["enable_progress_bar"] = False
    config["data"]["init_args"]["seed"] = seed
    config["model"]["init_args"]["policy"]["init_args"]["model_name_or_path"] = sft_model
    for callback in config["trainer"]["callbacks"]:
        name = callback["class_path"].rsplit(".", 1)[-1]
        if name == "TaskSamplingScheduler":
            callback["init_args"]["rule"] = RULES[strategy]
        elif name == "SavePretrained":
            callback["init_args"]["dirpath"] = str(root / "model")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.in.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def train(root: Path, threads: int) -> float:
    """Run ``gradbal fit`` on the run's config; returns wall seconds (0 if it was done)."""
    if (root / "model").exists():
        return 0.0
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "gradbal", "fit", "--config", str(root / "config.in.yaml")]
    t0 = time.perf_counter()
    with open(root / "fit.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def task_sources() -> list[Any]:
    """The base config's task sources, built with jsonargparse as the CLI builds them."""
    from jsonargparse import ArgumentParser

    from gradbal.datamodules import MultiTaskDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(MultiTaskDataModule, "data")
    config = yaml.safe_load(BASE_CONFIG.read_text())
    cfg = parser.parse_object({"data": config["data"]["init_args"]})
    return list(parser.instantiate(cfg).data.sources)


def evaluate(model: str, sources: list[Any], samples: int) -> dict[str, float]:
    results = evaluate_policy(
        PretrainedPolicy(model),
        sources,
        max_new_tokens=12,
        temperature=1.0,
        num_samples=samples,
    )
    return {r.task: r.accuracy for r in results}


def _values(scalars: dict[str, list[tuple[int, float]]], tag: str) -> dict[int, float]:
    return dict(scalars.get(tag, []))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _rho(x: list[float], y: list[float]) -> float:
    if len(x) < 3:
        return math.nan
    return float(
        spearman(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    )


def run_stats(root: Path, tasks: list[str]) -> dict[str, Any]:
    """Per task: mean unbiased ||G||^2, learning gain, mean reward / |advantage| / length, and
    Spearman over the measured steps of ||G||^2 with each of those three."""
    scalars = read_scalars(root)
    out: dict[str, Any] = {}
    for task in tasks:
        grad = _values(scalars, f"train/grad_norm_sq_unbiased/{task}")
        reward = _values(scalars, f"train/reward/{task}")
        adv = _values(scalars, f"train/abs_advantage/{task}")
        length = _values(scalars, f"train/completion_len/{task}")
        steps = sorted(reward)
        s = max(1, int(len(steps) * GAIN_FRACTION))
        gain = _mean([reward[t] for t in steps[-s:]]) - _mean([reward[t] for t in steps[:s]])
        both = sorted(set(grad) & set(reward) & set(adv) & set(length))
        g = [grad[t] for t in both]
        out[task] = {
            "grad_sq": _mean(list(grad.values())),
            "grad_points": len(grad),
            "gain": gain,
            "reward": _mean(list(reward.values())),
            "abs_adv": _mean(list(adv.values())),
            "length": _mean(list(length.values())),
            "rho_reward": _rho(g, [reward[t] for t in both]),
            "rho_abs_adv": _rho(g, [adv[t] for t in both]),
            "rho_length": _rho(g, [length[t] for t in both]),
            "final_prob": (scalars.get(f"train/sampling_prob/{task}") or [(0, math.nan)])[-1][1],
        }
    return out


def fmt(x: float, spec: str = ".3f") -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ratio(value: float, smallest: float) -> str:
    """``value / smallest`` as ``12.3x``; an estimate <= 0 (noise around 0) has no ratio."""
    return f"{value / smallest:.1f}x" if value > 0 else "≤ 0"


def tables(results: dict[str, Any], tasks: list[str], strategies: list[str]) -> str:
    lines: list[str] = []
    seeds = sorted({r["seed"] for r in results.values()})
    lines.append("### Per task (mean over seeds)\n")
    lines.append(
        "| strategy | task | mean ‖G‖² (unbiased) | ‖G‖² / smallest | learning gain | "
        "final pass@1 | final p_task |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for strategy in strategies:
        runs = [r for r in results.values() if r["strategy"] == strategy]
        if not runs:
            continue
        per_task = {
            t: {
                key: _mean([r["stats"][t][key] for r in runs])
                for key in ("grad_sq", "gain", "final_prob")
            }
            for t in tasks
        }
        acc = {t: _mean([r["accuracy"][t] for r in runs]) for t in tasks}
        smallest = min(v["grad_sq"] for v in per_task.values() if v["grad_sq"] > 0)
        for t in tasks:
            v = per_task[t]
            lines.append(
                f"| {strategy} | {t} | {v['grad_sq']:.3g} | {ratio(v['grad_sq'], smallest)} | "
                f"{v['gain']:+.3f} | {acc[t]:.1%} | {v['final_prob']:.3f} |"
            )
    lines.append("\n### Per strategy\n")
    lines.append(
        "| strategy | seeds | mean pass@1 (mean ± s.d. over seeds) | per seed | "
        "max/min task ‖G‖² | Spearman(‖G‖², gain) across tasks |"
    )
    lines.append("| --- | ---: | ---: | --- | ---: | ---: |")
    for strategy in strategies:
        runs = sorted(
            (r for r in results.values() if r["strategy"] == strategy), key=lambda r: r["seed"]
        )
        if not runs:
            continue
        means = [_mean([r["accuracy"][t] for t in tasks]) for r in runs]
        sd = statistics.stdev(means) if len(means) > 1 else math.nan
        ratios = []
        rhos = []
        for r in runs:
            g = [r["stats"][t]["grad_sq"] for t in tasks]
            positive = [x for x in g if x > 0]
            ratios.append(max(positive) / min(positive) if positive else math.nan)
            rhos.append(_rho(g, [r["stats"][t]["gain"] for t in tasks]))
        lines.append(
            f"| {strategy} | {len(runs)} | {_mean(means):.1%} ± {fmt(sd * 100, '.1f')} pts | "
            f"{', '.join(f'{m:.1%}' for m in means)} | {_mean(ratios):.1f}x | "
            f"{fmt(_mean(rhos), '+.2f')} |"
        )
    lines.append("\n### Is the imbalance explained by reward, |advantage| or length?\n")
    lines.append(
        "Within a task: Spearman over the measured steps between the task's ‖G‖² and its "
        "training reward, mean |advantage| and completion length (uniform runs, mean over "
        f"seeds {seeds}). Across tasks: Spearman over the {len(tasks)} tasks of run means.\n"
    )
    lines.append(
        "| task | ρ(‖G‖², reward) | ρ(‖G‖², mean abs adv) | ρ(‖G‖², length) | mean reward | mean abs adv | mean length |"
    )
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    uniform = [r for r in results.values() if r["strategy"] == "uniform"] or list(results.values())
    for t in tasks:
        v = {
            key: _mean([r["stats"][t][key] for r in uniform])
            for key in ("rho_reward", "rho_abs_adv", "rho_length", "reward", "abs_adv", "length")
        }
        lines.append(
            f"| {t} | {fmt(v['rho_reward'], '+.2f')} | {fmt(v['rho_abs_adv'], '+.2f')} | "
            f"{fmt(v['rho_length'], '+.2f')} | {v['reward']:.3f} | {v['abs_adv']:.3f} | "
            f"{v['length']:.1f} |"
        )
    across = {
        key: _mean(
            [
                _rho(
                    [r["stats"][t]["grad_sq"] for t in tasks],
                    [r["stats"][t][key] for t in tasks],
                )
                for r in uniform
            ]
        )
        for key in ("reward", "abs_adv", "length", "gain")
    }
    lines.append(
        f"| **across tasks** | {fmt(across['reward'], '+.2f')} | {fmt(across['abs_adv'], '+.2f')} "
        f"| {fmt(across['length'], '+.2f')} | | | |"
    )
    lines.append(
        f"\nAcross tasks, Spearman(‖G‖², learning gain) in the uniform runs: "
        f"{fmt(across['gain'], '+.2f')}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--strategies", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps per run")
    parser.add_argument("--sft-model", default="runs/demo/sft_model")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt for pass@1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.sft_model).exists():
        sys.exit(
            f"No SFT warm start at {args.sft_model}. Run `make demo` or `gradbal fit --config "
            "configs/toy/sft_warmstart.yaml` first, or pass --sft-model."
        )
    torch.set_num_threads(args.threads)
    sources = task_sources()
    tasks = [s.name for s in sources]
    results_path = args.out / "study.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    t_start = time.perf_counter()
    for seed in args.seeds:
        for strategy in args.strategies:
            key = f"{strategy}_s{seed}"
            root = run_config(strategy, seed, args.steps, args.out, args.sft_model)
            seconds = train(root, args.threads)
            if key not in results or results[key].get("steps") != args.steps:
                results[key] = {
                    "strategy": strategy,
                    "seed": seed,
                    "steps": args.steps,
                    "train_seconds": seconds,
                    "accuracy": evaluate(str(root / "model"), sources, args.samples),
                    "stats": run_stats(root, tasks),
                }
                results_path.write_text(json.dumps(results, indent=1))
            print(
                f"{key}: mean pass@1 {_mean(list(results[key]['accuracy'].values())):.1%}",
                flush=True,
            )
    chosen = {
        k: r
        for k, r in results.items()
        if r["strategy"] in args.strategies and r["seed"] in args.seeds and r["steps"] == args.steps
    }
    text = tables(chosen, tasks, args.strategies)
    header = (
        f"Imbalance study: {len(args.seeds)} seeds x {args.strategies}, {args.steps} GRPO steps "
        f"each from {args.sft_model}; {time.strftime('%Y-%m-%d')}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPU cores, {args.threads} threads; "
        f"{time.perf_counter() - t_start:.0f} s in this invocation.\n"
    )
    (args.out / "study.md").write_text(header + "\n" + text + "\n")
    print(header)
    print(text)


if __name__ == "__main__":
    main()
