"""Per-task estimates pooled over a window of steps, with their standard errors (torch only).

A pooled statistic keeps *sums* per task over the window, which add across steps and across
data-parallel ranks (reduce sums, then divide, never average per-rank means), and divides once
at the end. Two shapes cover the statistic sources of issue 15:

* a **ratio of sums** ``R = sum_u x_u / sum_u r_u`` over independent units ``u`` (a group, a
  pair, a measured step): the mean of a per-group quantity (``r_u = 1``), a per-row mean with
  groups as units (``r_u`` = rows of the group), or the pooled unbiased ``||G||^2`` (``x_u``
  the step's cross sum, ``r_u`` its pair count). Its standard error is the delta-method (ratio
  estimator) one, ``se^2 = n / (n - 1) * sum_u (x_u - R r_u)^2 / (sum_u r_u)^2``, which for
  ``r_u = 1`` is the familiar ``s / sqrt(n)`` (Cochran, *Sampling Techniques*, 3rd ed., eq.
  6.9, with the finite-population term dropped);
* a **least-squares slope** of ``y_u`` on ``t_u`` with its usual standard error
  ``sqrt(SSR / (n - 2) / S_tt)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Rows of :func:`ratio_sums`: units, sum x, sum r, sum x^2, sum x r, sum r^2.
RATIO_SUMS = 6
#: Rows of :func:`slope_sums`: units, sum t, sum y, sum t^2, sum t y, sum y^2.
SLOPE_SUMS = 6


class PooledEstimate(NamedTuple):
    """Per-task pooled estimates, all ``[K]`` float64.

    Attributes:
        values: The estimate; NaN where the task has no unit (or, for a slope, < 2 steps).
        stderr: Its standard error; NaN where it has fewer than 2 units (3 for a slope).
        units: Units pooled per task.
    """

    values: Tensor
    stderr: Tensor
    units: Tensor


def _per_task(rows: list[Tensor], task_ids: Tensor, num_tasks: int) -> Tensor:
    stacked = torch.stack([r.to(torch.float64) for r in rows])  # [S, U]
    out = torch.zeros(len(rows), num_tasks, dtype=torch.float64, device=stacked.device)
    return out.index_add_(1, task_ids.to(stacked.device), stacked)  # [S, K]


def ratio_sums(x: Tensor, r: Tensor, task_ids: Tensor, num_tasks: int) -> Tensor:
    """``[6, K]`` float64 sums of one step's units for :func:`pooled_ratio` (add them up).

    Args:
        x: ``[U]`` each unit's numerator.
        r: ``[U]`` each unit's denominator (its size; 1 for a plain mean).
        task_ids: ``[U]`` long, each unit's task.
        num_tasks: ``K``.

    Example::

        >>> ratio_sums(torch.tensor([1.0, 3.0]), torch.ones(2), torch.tensor([0, 0]), 2)[:, 0]
        tensor([ 2.,  4.,  2., 10.,  4.,  2.], dtype=torch.float64)
    """
    x, r = x.to(torch.float64), r.to(torch.float64)
    return _per_task([torch.ones_like(x), x, r, x * x, x * r, r * r], task_ids, num_tasks)


def pooled_ratio(sums: Tensor) -> PooledEstimate:
    """``R = sum x / sum r`` per task from :func:`ratio_sums` (summed over steps and ranks).

    Example::

        >>> s = ratio_sums(torch.tensor([1.0, 3.0]), torch.ones(2), torch.tensor([0, 0]), 1)
        >>> est = pooled_ratio(s)
        >>> est.values, est.stderr  # mean 2, s = sqrt(2), s / sqrt(2) = 1
        (tensor([2.], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    n, sx, sr, sxx, sxr, srr = sums.to(torch.float64).unbind(0)
    nan = torch.full_like(n, float("nan"))
    has = sr != 0
    values = torch.where(has, sx / torch.where(has, sr, 1.0), nan)
    # sum_u (x_u - R r_u)^2 from the sums; cancellation can make it a hair below 0
    d2 = (sxx - 2 * values * sxr + values**2 * srr).clamp_min(0)
    two = has & (n >= 2)
    var = n / torch.where(two, n - 1, 1.0) * d2 / torch.where(has, sr, 1.0) ** 2
    return PooledEstimate(values, torch.where(two, var.sqrt(), nan), n)


def slope_sums(t: Tensor, y: Tensor, task_ids: Tensor, num_tasks: int) -> Tensor:
    """``[6, K]`` float64 sums of one step's points ``(t, y)`` for :func:`pooled_slope`.

    Keep ``t`` small (steps since the window started): the sums are not centred.
    """
    t, y = t.to(torch.float64), y.to(torch.float64)
    return _per_task([torch.ones_like(t), t, y, t * t, t * y, y * y], task_ids, num_tasks)


def pooled_slope(sums: Tensor) -> PooledEstimate:
    """Least-squares slope of ``y`` on ``t`` per task, from :func:`slope_sums`.

    ``values`` is NaN where the task's points have fewer than 2 distinct ``t``; ``stderr`` is
    ``sqrt(SSR / (n - 2) / S_tt)``, NaN with fewer than 3 points.

    Example::

        >>> s = slope_sums(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]),
        ...                torch.zeros(3, dtype=torch.long), 1)
        >>> pooled_slope(s).values, pooled_slope(s).stderr
        (tensor([1.], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    n, st, sy, stt, sty, syy = sums.to(torch.float64).unbind(0)
    nan = torch.full_like(n, float("nan"))
    safe_n = torch.where(n > 0, n, 1.0)
    ctt = stt - st * st / safe_n  # [K] sum (t - mean t)^2
    cty = sty - st * sy / safe_n
    cyy = syy - sy * sy / safe_n
    # relative threshold: a window of one step has ctt ~ 0 up to rounding
    has = (n >= 2) & (ctt > 1e-9 * stt.abs().clamp_min(1.0))
    slope = torch.where(has, cty / torch.where(has, ctt, 1.0), nan)
    ssr = (cyy - slope * cty).clamp_min(0)
    three = has & (n >= 3)
    var = ssr / torch.where(three, n - 2, 1.0) / torch.where(has, ctt, 1.0)
    return PooledEstimate(slope, torch.where(three, var.sqrt(), nan), n)
