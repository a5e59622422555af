"""The report's ``summary.md``: figures with captions, skipped figures, per-run tables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from gradbal.report.figures import FIGURES, Runs, missing_groups
from gradbal.report.run_stats import (
    FINAL_FRACTION,
    GRAD_NORM_GROUP,
    GRAD_NORM_SQ_GROUP,
    LEARNING_GAIN_GROUP,
    REWARD_GROUP,
    SAMPLING_PROB_GROUP,
    VAL_ACCURACY_GROUP,
    all_tasks,
    count_nonpositive,
    grad_gain_spearman,
    grad_norm_sq_series,
    learning_gains,
    max_min_ratio,
    mean_grad_norm_sq,
    tail_mean,
    task_series,
)

SUMMARY_FILE = "summary.md"


def write_summary(
    runs: Runs,
    run_dirs: Mapping[str, Path],
    figures: Mapping[str, Path | None],
    out_dir: Path,
    smooth: int = 1,
) -> Path:
    """Write ``out_dir/summary.md`` and return its path.

    Args:
        runs: Run label -> ``read_scalars`` output, in display order.
        run_dirs: Run label -> the directory it was read from.
        figures: Figure key (of :data:`~gradbal.report.figures.FIGURES`) -> the PNG written, or
            ``None`` if it was skipped; PNGs are linked relative to ``out_dir``.
        out_dir: Where ``summary.md`` goes.
        smooth: The reward figure's moving-average window, for its caption.
    """
    tasks = all_tasks(runs.values())
    lines = ["# gradbal report", ""]
    lines += ["| run | directory | last step | tags |", "| --- | --- | ---: | ---: |"]
    for label, scalars in runs.items():
        last = max((pts[-1][0] for pts in scalars.values() if pts), default=0)
        lines.append(f"| {label} | `{run_dirs[label]}` | {last} | {len(scalars)} |")
    lines += ["", f"Tasks: {', '.join(tasks) if tasks else '(no per-task tags found)'}.", ""]

    lines += ["## Figures", ""]
    for key, path in figures.items():
        if path is not None:
            link = Path(os.path.relpath(path, out_dir)).as_posix()
            spec = FIGURES[key]
            lines += [f"### {spec.title}", "", f"![{spec.title}]({link})", ""]
            lines += [_caption(key, runs, smooth), ""]
    skipped = [key for key, path in figures.items() if path is None]
    if skipped:
        lines += ["## Skipped figures", ""]
        for key in skipped:
            spec = FIGURES[key]
            missing = missing_groups(runs, spec)
            why = (
                "no run logged " + " nor ".join(f"`{m}`" for m in missing)
                if missing
                else "no run logged all the tags it needs together"
            )
            lines.append(f"- `{spec.file}` ({spec.title}): {why}.")
        lines.append("")
    lines += [*_run_table(runs), "", *_task_table(runs, tasks)]
    path = out_dir / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _caption(key: str, runs: Runs, smooth: int) -> str:
    if key == "grad_norm_sq":
        series = [grad_norm_sq_series(s) for s in runs.values()]
        omitted, total = map(sum, zip(*(count_nonpositive(c) for c, _ in series), strict=True))
        text = (
            f"`{GRAD_NORM_SQ_GROUP}/<task>`, log scale. {omitted} of {total} points are <= 0 "
            "and are left out of the plot: 0 when no group's rewards vary, < 0 when noise "
            "dominates the unbiased estimate."
        )
        if any(source == GRAD_NORM_GROUP for _, source in series):
            text += f" Runs without it show `{GRAD_NORM_GROUP}/<task>` squared."
        return text
    if key == "sampling_probs":
        return f"`{SAMPLING_PROB_GROUP}/<task>`: the share of prompts drawn from each task."
    if key == "reward":
        text = f"`{REWARD_GROUP}/<task>`: mean reward of the task's completions in each step."
        if smooth > 1:
            text += f" Trailing moving average over {smooth} logged points; raw values faint."
        return text
    if key == "val_accuracy":
        return f"`{VAL_ACCURACY_GROUP}/<task>` at each validation run."
    return (
        "One point per task and run: x is the task's squared gradient norm averaged over the "
        f"run; y is the mean of `{LEARNING_GAIN_GROUP}/<task>`, or, without it, the reward "
        "gain (mean of the last 20% of the task's reward points minus the first 20%). A "
        "Spearman ρ near 1 would mean that larger gradients bring larger gains."
    )


def _run_table(runs: Runs) -> list[str]:
    lines = [
        "## Per run",
        "",
        "| run | max/min mean squared grad norm | Spearman ρ (grad norm vs gain) | gain from |",
        "| --- | ---: | ---: | --- |",
    ]
    for label, scalars in runs.items():
        grad_sq, gains = mean_grad_norm_sq(scalars), learning_gains(scalars)
        rho = grad_gain_spearman(grad_sq, gains.values)
        source = gains.source if gains.values else "n/a"
        lines.append(f"| {label} | {_fmt(max_min_ratio(grad_sq))} | {_fmt(rho)} | {source} |")
    return lines


def _task_table(runs: Runs, tasks: list[str]) -> list[str]:
    lines = [
        "## Per run and task",
        "",
        f"Final reward: mean of the last {FINAL_FRACTION:.0%} of the task's reward points (at "
        "least one). Final val accuracy: the last validation run's. Mean squared grad norm: "
        "over every measured step. n/a: not logged.",
        "",
        "| run | task | final reward | final val accuracy | mean squared grad norm | gain |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, scalars in runs.items():
        rewards = task_series(scalars, REWARD_GROUP)
        accuracy = task_series(scalars, VAL_ACCURACY_GROUP)
        grad_sq, gains = mean_grad_norm_sq(scalars), learning_gains(scalars).values
        for task in tasks:
            reward = tail_mean(rewards[task]) if task in rewards else math.nan
            acc = accuracy[task][-1][1] if task in accuracy else math.nan
            cells = [reward, acc, grad_sq.get(task, math.nan), gains.get(task, math.nan)]
            lines.append(f"| {label} | {task} | " + " | ".join(_fmt(v) for v in cells) + " |")
    return lines


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"
