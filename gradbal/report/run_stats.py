"""Per-task curves and per-run numbers a report shows, computed from ``read_scalars`` output."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch

from gradbal.gradstats import spearman
from gradbal.metric_names import (
    ACCURACY,
    GRAD_NORM,
    GRAD_NORM_SQ_UNBIASED,
    LEARNING_GAIN,
    REWARD,
    SAMPLING_PROB,
    metric_name,
)

Series = list[tuple[int, float]]
Scalars = Mapping[str, Series]

GRAD_NORM_SQ_GROUP = metric_name("train", GRAD_NORM_SQ_UNBIASED)
GRAD_NORM_GROUP = metric_name("train", GRAD_NORM)
SAMPLING_PROB_GROUP = metric_name("train", SAMPLING_PROB)
REWARD_GROUP = metric_name("train", REWARD)
VAL_ACCURACY_GROUP = metric_name("val", ACCURACY)
LEARNING_GAIN_GROUP = metric_name("train", LEARNING_GAIN)

REWARD_GAIN_FRACTION = 0.2  # reward gain: mean of the last 20% of points minus the first 20%
FINAL_FRACTION = 0.1  # "final" training reward: mean of the last 10% of points (at least one)


class TaskValues(NamedTuple):
    """One number per task and where it came from (a tag group, or a description)."""

    values: dict[str, float]
    source: str


def task_series(scalars: Scalars, group: str) -> dict[str, Series]:
    """``{task: points}`` of the tags ``<group>/<task>`` (no deeper tags), tasks sorted."""
    prefix = group + "/"
    found = {
        tag[len(prefix) :]: points
        for tag, points in scalars.items()
        if tag.startswith(prefix) and "/" not in tag[len(prefix) :] and points
    }
    return dict(sorted(found.items()))


def has_group(runs: Iterable[Scalars], group: str) -> bool:
    """Whether any run logged at least one ``<group>/<task>`` tag."""
    return any(task_series(scalars, group) for scalars in runs)


def grad_norm_sq_series(scalars: Scalars) -> tuple[dict[str, Series], str]:
    """Each task's squared gradient norm over steps, and the tag group it was read from.

    ``train/grad_norm_sq_unbiased/<task>`` as logged (it may be <= 0 when noise dominates);
    otherwise ``train/grad_norm/<task>`` squared with its sign kept (``TaskGradNormMonitor``
    logs the signed square root). ``({}, "")`` when neither exists.
    """
    unbiased = task_series(scalars, GRAD_NORM_SQ_GROUP)
    if unbiased:
        return unbiased, GRAD_NORM_SQ_GROUP
    norms = task_series(scalars, GRAD_NORM_GROUP)
    if norms:
        squared = {t: [(s, v * abs(v)) for s, v in pts] for t, pts in norms.items()}
        return squared, GRAD_NORM_GROUP
    return {}, ""


def finite_mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN if there are none."""
    kept = [v for v in values if math.isfinite(v)]
    return sum(kept) / len(kept) if kept else math.nan


def mean_grad_norm_sq(scalars: Scalars) -> dict[str, float]:
    """Each task's squared gradient norm averaged over the run (the unbiased estimates' mean)."""
    series, _ = grad_norm_sq_series(scalars)
    return {task: finite_mean(v for _, v in pts) for task, pts in series.items()}


def tail_mean(points: Series, fraction: float = FINAL_FRACTION) -> float:
    """Mean of the last ``fraction`` of the points (at least one); NaN if empty."""
    n = max(1, math.ceil(len(points) * fraction))
    return finite_mean(v for _, v in points[-n:])


def reward_gain(points: Series, fraction: float = REWARD_GAIN_FRACTION) -> float:
    """Mean of the last ``fraction`` of the points minus the mean of the first ``fraction``."""
    n = max(1, math.floor(len(points) * fraction))
    if len(points) < 2:
        return math.nan
    return finite_mean(v for _, v in points[-n:]) - finite_mean(v for _, v in points[:n])


def learning_gains(scalars: Scalars) -> TaskValues:
    """Each task's learning gain over the run.

    The mean of ``train/learning_gain/<task>`` (``LearningGainMonitor``) when logged; otherwise
    the reward gain, mean of the last 20% of ``train/reward/<task>`` minus the first 20%.
    """
    gains = task_series(scalars, LEARNING_GAIN_GROUP)
    if gains:
        values = {t: finite_mean(v for _, v in pts) for t, pts in gains.items()}
        return TaskValues(values, f"mean {LEARNING_GAIN_GROUP}")
    rewards = task_series(scalars, REWARD_GROUP)
    values = {t: reward_gain(pts) for t, pts in rewards.items()}
    return TaskValues(values, f"reward gain (last 20% minus first 20% of {REWARD_GROUP})")


def grad_gain_spearman(grad_sq: Mapping[str, float], gains: Mapping[str, float]) -> float:
    """Spearman's rank correlation across tasks with both numbers finite; NaN below 2 tasks."""
    tasks = [t for t in grad_sq if t in gains]
    tasks = [t for t in tasks if math.isfinite(grad_sq[t]) and math.isfinite(gains[t])]
    if len(tasks) < 2:
        return math.nan
    x = torch.tensor([grad_sq[t] for t in tasks], dtype=torch.float64)
    y = torch.tensor([gains[t] for t in tasks], dtype=torch.float64)
    return float(spearman(x, y))


def max_min_ratio(values: Mapping[str, float]) -> float:
    """Largest over smallest value across tasks; NaN unless >= 2 values, all finite and > 0."""
    kept = list(values.values())
    if len(kept) < 2 or not all(math.isfinite(v) and v > 0 for v in kept):
        return math.nan
    return max(kept) / min(kept)


def count_nonpositive(series: Mapping[str, Series]) -> tuple[int, int]:
    """``(points <= 0, all finite points)`` over every task's series."""
    values = [v for pts in series.values() for _, v in pts if math.isfinite(v)]
    return sum(v <= 0 for v in values), len(values)


def all_tasks(runs: Iterable[Scalars]) -> list[str]:
    """Every task with a per-task curve in any report group, in any run, sorted."""
    groups = (
        GRAD_NORM_SQ_GROUP,
        GRAD_NORM_GROUP,
        SAMPLING_PROB_GROUP,
        REWARD_GROUP,
        VAL_ACCURACY_GROUP,
        LEARNING_GAIN_GROUP,
    )
    return sorted({t for scalars in runs for g in groups for t in task_series(scalars, g)})
