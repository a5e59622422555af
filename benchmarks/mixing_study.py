"""The pre-registered mixing study of docs/study.md: does any task-mixing rule beat uniform?

Multi-task GRPO from the ``make demo`` SFT warm start on the five built-in tasks, one run per
(arm, seed), every arm at the same generation budget (800 steps x 8 prompts x 8 completions =
51,200 completions; DAPO's refills count against it). Arms (docs/study.md says why each is in):

* ``uniform``: the default: no statistic source, no scheduler, p_k = 1/K;
* ``grad_proportional``: ``TaskGradNormMonitor`` + ``GradProportional(power=2)``;
* ``inverse_grad``: ``TaskGradNormMonitor`` + ``InverseGradNorm(power=1)``;
* ``learnability``: ``LearnabilityMonitor`` + ``LearnabilityProportional(power=1)``;
* ``progress_bandit``: ``LearningProgressMonitor`` + ``LearningProgressBandit(eta=1, gamma=0.1)``;
* ``dapo_uniform``: uniform mixing, ``GRPOModule(dynamic_sampling=DynamicSampling(max_rounds=3))``
  and ``GenerationBudget(max_completions=51200)``.

Outcome (fixed in docs/study.md before any run): each run's final model is scored on every
task's 200 validation prompts (sampled pass@1, 4 samples at T=1, evaluation seed 0, the same for
every run). Per arm and seed, the mean over tasks minus uniform's at the same seed is the paired
difference; its mean over seeds and standard error (sd / sqrt(seeds)) decide, with the per-task
paired differences for "no task lowered by more than 2 s.e.".

Every run is a ``gradbal fit`` subprocess (1 thread; ``--jobs`` at once) followed by its
evaluation in a subprocess; a run whose ``eval.json`` exists is reused and an interrupted fit
resumes from its checkpoint, so the study can be run in parts:

    .venv/bin/python benchmarks/mixing_study.py --jobs 2            # 6 arms x 5 seeds
    .venv/bin/python benchmarks/mixing_study.py --arms uniform learnability --seeds 0 1

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from imbalance_study import BASE_CONFIG, task_sources  # the same base run and its tasks

STEPS = 800
COMPLETIONS = STEPS * 8 * 8  # steps x prompts x completions per prompt: the budget of every arm


def _scheduler(rule: str, init: dict[str, Any], ema: float, **extra: Any) -> dict[str, Any]:
    return {
        "class_path": "gradbal.callbacks.TaskSamplingScheduler",
        "init_args": {
            "rule": {"class_path": f"gradbal.weighting.{rule}", "init_args": init},
            "every": "epoch",
            "ema": ema,
            "floor": 0.05,
            **extra,
        },
    }


_GRAD_MONITOR = {
    "class_path": "gradbal.callbacks.TaskGradNormMonitor",
    "init_args": {
        "params": "last_attention_block",
        "estimator": "cross_product",
        "every_n_steps": 5,
    },
}

# arm -> the callbacks it adds to the base run (and, for DAPO, the module options)
ARMS: dict[str, dict[str, Any]] = {
    "uniform": {"callbacks": []},
    "grad_proportional": {
        "callbacks": [
            _GRAD_MONITOR,
            _scheduler("GradProportional", {"power": 2.0}, 0.8, min_groups_per_task=2),
        ]
    },
    "inverse_grad": {
        "callbacks": [
            _GRAD_MONITOR,
            _scheduler("InverseGradNorm", {"power": 1.0}, 0.8, min_groups_per_task=2),
        ]
    },
    "learnability": {
        "callbacks": [
            {"class_path": "gradbal.callbacks.LearnabilityMonitor"},
            _scheduler("LearnabilityProportional", {"power": 1.0}, 0.5),
        ]
    },
    "progress_bandit": {
        "callbacks": [
            {"class_path": "gradbal.callbacks.LearningProgressMonitor"},
            _scheduler("LearningProgressBandit", {"eta": 1.0, "gamma": 0.1}, 0.5),
        ]
    },
    "dapo_uniform": {
        "callbacks": [
            {
                "class_path": "gradbal.callbacks.GenerationBudget",
                "init_args": {"max_completions": COMPLETIONS},
            }
        ],
        "model": {
            "dynamic_sampling": {
                "class_path": "gradbal.modules.DynamicSampling",
                "init_args": {"max_rounds": 3, "min_keep_rate": 0.25},
            }
        },
    },
}


def run_config(arm: str, seed: int, out: Path, sft_model: str) -> Path:
    """Write the run's YAML: the base run (its own balancing callbacks removed) plus the arm's."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    root = out / f"{arm}_s{seed}"
    config["seed_everything"] = seed
    config["trainer"]["max_steps"] = STEPS
    config["trainer"]["default_root_dir"] = str(root)
    config["trainer"]["enable_progress_bar"] = False
    config["data"]["init_args"]["seed"] = seed
    model = config["model"]["init_args"]
    model["policy"]["init_args"]["model_name_or_path"] = sft_model
    model.update(ARMS[arm].get("model", {}))
    kept = []
    for callback in config["trainer"]["callbacks"]:
        name = callback["class_path"].rsplit(".", 1)[-1]
        if name == "SavePretrained":
            callback["init_args"]["dirpath"] = str(root / "model")
        if name in ("SavePretrained", "PeriodicCheckpoint"):
            kept.append(callback)
    config["trainer"]["callbacks"] = ARMS[arm]["callbacks"] + kept
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.in.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _run(cmd: list[str], log: Path) -> float:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.getcwd(),  # this checkout's gradbal, also for the evaluation script
    }
    t0 = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def run_arm(root: Path, samples: int) -> dict[str, Any]:
    """Train (unless the model exists) and evaluate (unless ``eval.json`` exists) one run."""
    done = root / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    seconds = 0.0
    if not (root / "model").exists():
        fit = [sys.executable, "-m", "gradbal", "fit", "--config", str(root / "config.in.yaml")]
        seconds = _run(fit, root / "fit.log")
    score = [sys.executable, __file__, "--evaluate", str(root), "--samples", str(samples)]
    _run(score, root / "eval.log")
    result = json.loads(done.read_text())
    result["train_seconds"] = seconds
    done.write_text(json.dumps(result, indent=1))
    return result


def evaluate_run(root: Path, samples: int) -> None:
    """Score ``root/model`` on every task's validation prompts; write ``root/eval.json``."""
    import torch

    from gradbal.evaluation import evaluate_policy
    from gradbal.models import PretrainedPolicy
    from gradbal.report import read_scalars

    torch.set_num_threads(1)
    sources = task_sources()
    results = evaluate_policy(
        PretrainedPolicy(str(root / "model")),
        sources,
        max_new_tokens=12,
        temperature=1.0,
        num_samples=samples,
        seed=0,
    )
    scalars = read_scalars(root)
    steps = scalars.get("train/reward/" + sources[0].name, [])
    generated = scalars.get("train/completions_generated", [])
    payload = {
        "accuracy": {r.task: r.accuracy for r in results},
        "prompts": {r.task: int(r.correct.numel()) for r in results},
        "last_step": max((s for s, _ in steps), default=-1) + 1,
        "completions_generated": generated[-1][1] if generated else None,
        "final_prob": {
            s.name: (scalars.get(f"train/sampling_prob/{s.name}") or [(0, math.nan)])[-1][1]
            for s in sources
        },
    }
    (root / "eval.json").write_text(json.dumps(payload, indent=1))


def held_updates(root: Path) -> tuple[int, int] | None:
    """``(held, applied)`` mixture updates of the run's scheduler, from its last checkpoint
    (``num_held``: updates the measurement guarantee kept the mixture; ``None``: no scheduler)."""
    import torch

    for path in sorted((root / "checkpoints").glob("*/last.ckpt")):
        state = torch.load(path, map_location="cpu", weights_only=False).get("callbacks", {})
        for key, value in state.items():
            if key.startswith("TaskSamplingScheduler") and "num_held" in value:
                return int(value["num_held"]), int(value.get("num_updates", 0))
    return None


def _mean_se(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.nan
    return mean, se


def tables(results: dict[str, dict[int, dict[str, Any]]], tasks: list[str]) -> str:
    """The pre-registered outcome tables (docs/study.md, "Analysis")."""
    base = results["uniform"]
    lines = [
        "| arm | seeds | mean pass@1 | per seed | paired diff vs uniform | s.e. | diff / s.e. | "
        "worst task (diff, s.e.) | verdict |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    per_task_rows = []
    for arm, runs in results.items():
        seeds = sorted(s for s in runs if s in base)
        means = {s: sum(runs[s]["accuracy"][t] for t in tasks) / len(tasks) for s in seeds}
        mean_acc = sum(means.values()) / len(means)
        per_seed = ", ".join(f"{means[s]:.1%}" for s in seeds)
        if arm == "uniform":
            lines.append(
                f"| {arm} | {len(seeds)} | {mean_acc:.1%} | {per_seed} | | | | | baseline |"
            )
            continue
        diffs = [means[s] - sum(base[s]["accuracy"][t] for t in tasks) / len(tasks) for s in seeds]
        d, se = _mean_se(diffs)
        task_stats = {
            t: _mean_se([runs[s]["accuracy"][t] - base[s]["accuracy"][t] for s in seeds])
            for t in tasks
        }
        worst = min(tasks, key=lambda t: task_stats[t][0])
        lowered = [t for t in tasks if task_stats[t][0] < -2 * task_stats[t][1]]
        if d > 2 * se and not lowered:
            verdict = "**beats uniform**"
        elif lowered:
            verdict = f"lowers {', '.join(lowered)}"
        else:
            verdict = "no detectable difference" if abs(d) <= 2 * se else "worse than uniform"
        wd, wse = task_stats[worst]
        lines.append(
            f"| {arm} | {len(seeds)} | {mean_acc:.1%} | {per_seed} | {d * 100:+.2f} pts | "
            f"{se * 100:.2f} pts | {d / se:+.2f} | {worst} ({wd * 100:+.1f}, {wse * 100:.1f}) | "
            f"{verdict} |"
        )
        for t in tasks:
            td, tse = task_stats[t]
            per_task_rows.append(f"| {arm} | {t} | {td * 100:+.1f} pts | {tse * 100:.1f} pts |")
    acc_rows = []
    for arm, runs in results.items():
        seeds = sorted(runs)
        acc = {t: sum(runs[s]["accuracy"][t] for s in seeds) / len(seeds) for t in tasks}
        probs = {t: sum(runs[s]["final_prob"][t] for s in seeds) / len(seeds) for t in tasks}
        steps = sum(runs[s]["last_step"] for s in seeds) / len(seeds)
        cells = " | ".join(f"{acc[t]:.1%} ({probs[t]:.2f})" for t in tasks)
        counts = [runs[s].get("held") for s in seeds]
        held = (
            f"{sum(c[0] for c in counts)} of {sum(c[0] + c[1] for c in counts)}"
            if all(counts)
            else ""
        )
        acc_rows.append(f"| {arm} | {cells} | {steps:.0f} | {held} |")
    return "\n".join(
        [
            "### Outcome: mean held-out pass@1 over tasks, paired against uniform\n",
            *lines,
            "\n### Per task: paired difference against uniform (mean over seeds, s.e.)\n",
            "| arm | task | diff | s.e. |",
            "| --- | --- | ---: | ---: |",
            *per_task_rows,
            "\n### Per task: final pass@1 (final sampling probability), mean over seeds\n",
            f"| arm | {' | '.join(tasks)} | optimiser steps | mixture updates held |",
            "| --- | " + " | ".join("---:" for _ in tasks) + " | ---: | ---: |",
            *acc_rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--sft-model", default="runs/demo/sft_model")
    parser.add_argument("--out", type=Path, default=Path("runs/mixing_study"))
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt for pass@1")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, 1 thread each")
    parser.add_argument("--evaluate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate is not None:
        evaluate_run(args.evaluate, args.samples)
        return
    if "uniform" not in args.arms:
        sys.exit("The outcome is paired against uniform: include `uniform` in --arms.")
    if not Path(args.sft_model).exists():
        sys.exit(
            f"No SFT warm start at {args.sft_model}. Run `make demo` or `gradbal fit --config "
            "configs/toy/sft_warmstart.yaml` first, or pass --sft-model."
        )
    t0 = time.perf_counter()
    # seed-major order: a study stopped early has whole seeds of every arm (paired)
    order = [(arm, seed) for seed in args.seeds for arm in args.arms]
    roots = {key: run_config(*key, args.out, args.sft_model) for key in order}
    results: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in args.arms}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(run_arm, roots[key], args.samples) for key in order}
        for (arm, seed), future in futures.items():
            results[arm][seed] = {**future.result(), "held": held_updates(roots[arm, seed])}
            acc = results[arm][seed]["accuracy"]
            print(f"{arm}_s{seed}: mean pass@1 {sum(acc.values()) / len(acc):.1%}", flush=True)
    tasks = list(next(iter(results["uniform"].values()))["accuracy"])
    header = (
        f"Mixing study (docs/study.md): arms {args.arms}, seeds {args.seeds}, {STEPS} steps / "
        f"{COMPLETIONS} completions per run from {args.sft_model}; {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPU cores, {args.jobs} runs at once, 1 thread each; "
        f"{time.perf_counter() - t0:.0f} s in this invocation.\n"
    )
    text = tables(results, tasks)
    (args.out / "study.json").write_text(json.dumps(results, indent=1))
    (args.out / "study.md").write_text(header + "\n" + text + "\n")
    print(header)
    print(text)


if __name__ == "__main__":
    main()
