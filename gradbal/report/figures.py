"""The report's figures: one function per figure, each a fixed-size PNG or ``None``.

Every function takes ``runs`` (run label -> ``read_scalars`` output, in display order) and the
output directory, and returns the written path, or ``None`` when no run logged the tags the
figure needs (:data:`FIGURES` says which). With one run, a figure has one panel with a line per
task; with several, one panel per task with a line per run. Figures are drawn with
matplotlib's object-oriented API on the Agg canvas (no pyplot state, no display needed) at
``FIGSIZE`` inches and ``DPI`` dots per inch: 1000x600 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradbal.report.run_stats import (
    GRAD_NORM_GROUP,
    GRAD_NORM_SQ_GROUP,
    LEARNING_GAIN_GROUP,
    REWARD_GROUP,
    SAMPLING_PROB_GROUP,
    VAL_ACCURACY_GROUP,
    Scalars,
    Series,
    all_tasks,
    count_nonpositive,
    grad_gain_spearman,
    grad_norm_sq_series,
    has_group,
    learning_gains,
    mean_grad_norm_sq,
    task_series,
)

Runs = Mapping[str, Scalars]
Curves = Mapping[str, Mapping[str, Series]]  # run label -> task -> points

FIGSIZE = (10.0, 6.0)
DPI = 100
_MARKER_MAX_POINTS = 50  # fewer points than this: draw markers, so single points show
_RUN_MARKERS = "osD^v<>Pp*"


class FigureSpec(NamedTuple):
    """A figure's file name, title, and tag groups (``needs``: each entry, one of its groups)."""

    file: str
    title: str
    needs: tuple[tuple[str, ...], ...]


FIGURES: dict[str, FigureSpec] = {
    "grad_norm_sq": FigureSpec(
        "grad_norm_sq.png",
        "Per-task squared gradient norm",
        ((GRAD_NORM_SQ_GROUP, GRAD_NORM_GROUP),),
    ),
    "sampling_probs": FigureSpec(
        "sampling_probs.png", "Task sampling probabilities", ((SAMPLING_PROB_GROUP,),)
    ),
    "reward": FigureSpec("reward.png", "Per-task training reward", ((REWARD_GROUP,),)),
    "val_accuracy": FigureSpec(
        "val_accuracy.png", "Per-task validation accuracy", ((VAL_ACCURACY_GROUP,),)
    ),
    "grad_norm_vs_gain": FigureSpec(
        "grad_norm_vs_gain.png",
        "Gradient norm vs learning gain",
        ((GRAD_NORM_SQ_GROUP, GRAD_NORM_GROUP), (LEARNING_GAIN_GROUP, REWARD_GROUP)),
    ),
}


def missing_groups(runs: Runs, spec: FigureSpec) -> list[str]:
    """The ``needs`` entries of ``spec`` that no run logged, as ``"a/<task> (or b/<task>)"``."""
    return [
        " (or ".join(f"{g}/<task>" for g in options) + ")" * (len(options) - 1)
        for options in spec.needs
        if not any(has_group(runs.values(), g) for g in options)
    ]


def plot_grad_norms(runs: Runs, out_dir: Path) -> Path | None:
    """Squared gradient norm per task over steps, log scale; points <= 0 are left out."""
    read = {label: grad_norm_sq_series(scalars) for label, scalars in runs.items()}
    curves = {label: series for label, (series, _) in read.items()}
    if not any(curves.values()):
        return None
    omitted, total = map(sum, zip(*(count_nonpositive(c) for c in curves.values()), strict=True))
    caption = (
        f"{omitted} of {total} points are <= 0 and are not drawn on the log axis (0 when no "
        "group's rewards vary; < 0 when noise dominates the unbiased estimate)."
    )
    if any(source == GRAD_NORM_GROUP for _, source in read.values()):
        caption += f" Without {GRAD_NORM_SQ_GROUP} tags, {GRAD_NORM_GROUP} is squared."
    spec = FIGURES["grad_norm_sq"]
    fig = _line_figure(runs, curves, spec.title, "squared gradient norm", log=True, caption=caption)
    return _save(fig, out_dir / spec.file)


def plot_sampling_probs(runs: Runs, out_dir: Path) -> Path | None:
    """Each task's sampling probability over steps."""
    curves = {label: task_series(s, SAMPLING_PROB_GROUP) for label, s in runs.items()}
    if not any(curves.values()):
        return None
    spec = FIGURES["sampling_probs"]
    fig = _line_figure(runs, curves, spec.title, "sampling probability", ylim=(0.0, None))
    return _save(fig, out_dir / spec.file)


def plot_rewards(runs: Runs, out_dir: Path, smooth: int = 1) -> Path | None:
    """Each task's training reward over steps; ``smooth > 1``: trailing moving average."""
    curves = {label: task_series(s, REWARD_GROUP) for label, s in runs.items()}
    if not any(curves.values()):
        return None
    caption = (
        f"Moving average over the last {smooth} logged points; raw values faint."
        if smooth > 1
        else ""
    )
    spec = FIGURES["reward"]
    fig = _line_figure(runs, curves, spec.title, "reward", caption=caption, smooth=smooth)
    return _save(fig, out_dir / spec.file)


def plot_val_accuracy(runs: Runs, out_dir: Path) -> Path | None:
    """Each task's validation accuracy at every validation run."""
    curves = {label: task_series(s, VAL_ACCURACY_GROUP) for label, s in runs.items()}
    if not any(curves.values()):
        return None
    spec = FIGURES["val_accuracy"]
    fig = _line_figure(runs, curves, spec.title, "accuracy", ylim=(-0.02, 1.02))
    return _save(fig, out_dir / spec.file)


def plot_grad_vs_gain(runs: Runs, out_dir: Path) -> Path | None:
    """Per task: mean squared gradient norm over the run against learning gain, per run."""
    fig = _new_figure()
    ax = fig.add_subplot()
    rhos, sources, xs = [], set(), []
    for i, (label, scalars) in enumerate(runs.items()):
        grad_sq, gains = mean_grad_norm_sq(scalars), learning_gains(scalars)
        tasks = [t for t in grad_sq if math.isfinite(grad_sq[t] + gains.values.get(t, math.nan))]
        if not tasks:
            continue
        sources.add(gains.source)
        x, y = [grad_sq[t] for t in tasks], [gains.values[t] for t in tasks]
        xs += x
        colour = f"C{i % 10}"
        marker = _RUN_MARKERS[i % len(_RUN_MARKERS)]
        ax.scatter(x, y, color=colour, marker=marker, s=50, label=label, zorder=3)
        for task, xi, yi in zip(tasks, x, y, strict=True):
            ax.annotate(task, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
        rhos.append(f"{label}: {_fmt(grad_gain_spearman(grad_sq, gains.values))}")
    if not xs:
        return None
    caption = ""
    if min(xs) > 0:
        ax.set_xscale("log")
    else:
        caption = "Linear x axis: some tasks' mean squared norm is <= 0 (noise dominates)."
    ax.axhline(0.0, color="0.6", linewidth=0.8, zorder=1)
    ax.set_xlabel("mean squared gradient norm over the run")
    ax.set_ylabel(sources.pop() if len(sources) == 1 else "learning gain (per-run source)")
    ax.grid(True, alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    spec = FIGURES["grad_norm_vs_gain"]
    fig.suptitle(f"{spec.title}. Spearman ρ across tasks, {'; '.join(rhos)}")
    if caption:
        fig.supxlabel(caption, fontsize=9)
    return _save(fig, out_dir / spec.file)


def _line_figure(
    runs: Runs,
    curves: Curves,
    title: str,
    ylabel: str,
    *,
    log: bool = False,
    caption: str = "",
    smooth: int = 1,
    ylim: tuple[float, float | None] | None = None,
) -> Figure:
    """One panel with a line per task (one run), or a panel per task with a line per run."""
    tasks = sorted({t for c in curves.values() for t in c})
    run_colour = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    if len(runs) == 1:
        task_colour = {t: f"C{i % 10}" for i, t in enumerate(all_tasks(runs.values()))}
        ((run, by_task),) = curves.items()
        lines = [(t, by_task[t], task_colour[t]) for t in tasks]
        panels = [(run, lines)]
    else:
        panels = [
            (task, [(r, c[task], run_colour[r]) for r, c in curves.items() if task in c])
            for task in tasks
        ]
    fig = _new_figure()
    cols = len(panels) if len(panels) <= 3 else 2 if len(panels) == 4 else 3
    cols = cols if len(panels) <= 9 else 4
    rows = math.ceil(len(panels) / cols)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).flatten()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for i, (ax, (name, lines)) in enumerate(zip(axes, panels, strict=False)):
        for label, points, colour in lines:
            _draw(ax, points, label, colour, log=log, smooth=smooth)
        if log:
            _set_log_scale(ax, [points for _, points, _ in lines])
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(name, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(True, alpha=0.3)
        if i >= len(panels) - cols:
            ax.set_xlabel("step")
        if i % cols == 0:
            ax.set_ylabel(ylabel)
    if len(runs) == 1:
        axes[0].legend(fontsize=8)
    else:  # every run in the legend, also one missing from the first panel
        handles = [Line2D([], [], color=c, label=r) for r, c in run_colour.items()]
        axes[0].legend(handles=handles, fontsize=8)
    fig.suptitle(title)
    if caption:
        fig.supxlabel(caption, fontsize=9)
    return fig


def _draw(ax: Axes, points: Series, label: str, colour: str, *, log: bool, smooth: int) -> None:
    steps = [s for s, _ in points]
    values = [v if not log or v > 0 else math.nan for _, v in points]
    marker = "o" if len(points) < _MARKER_MAX_POINTS else None
    if smooth > 1:
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        values = _moving_average(values, smooth)
    ax.plot(steps, values, color=colour, label=label, marker=marker, markersize=3)


def _set_log_scale(ax: Axes, drawn: list[Series]) -> None:
    """Log y axis, unless the panel has nothing > 0 to show (then say so inside it)."""
    if any(v > 0 for points in drawn for _, v in points):  # NaN > 0 is False
        ax.set_yscale("log")
        return
    ax.text(0.5, 0.5, "no value > 0", transform=ax.transAxes, ha="center", va="center")
    steps = [s for points in drawn for s, _ in points]
    if steps and min(steps) < max(steps):  # autoscale ignores the all-NaN lines
        ax.set_xlim(min(steps), max(steps))


def _moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean of the last ``window`` finite values (fewer at the start)."""
    out = []
    for i in range(len(values)):
        kept = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(kept) / len(kept) if kept else math.nan)
    return out


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _new_figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
