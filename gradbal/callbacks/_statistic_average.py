"""The moving average of one per-task statistic (and its variance), as a RuleSchedule keeps it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradbal.callbacks.statistics import Measurement


class StatisticAverage:
    """EMA of one statistic per task, the variance of each average, and when it was measured.

    Args:
        ema: Decay in ``[0, 1)``; a task's first measurement initialises its average.

    Attributes:
        average: ``[K]`` EMA per task, NaN until first measured.
        variance: ``[K]`` variance of each EMA, NaN without standard errors.
        measured_step: ``[K]`` ``global_step`` when last measured, -1: never.
        ingested_step: The source's step of the last measurement folded in.
    """

    def __init__(self, ema: float):
        self.ema = ema
        self.average: list[float] = []
        self.variance: list[float] = []
        self.measured_step: list[int] = []
        self.ingested_step = -1

    def setup(self, num_tasks: int) -> None:
        """Fill what a fresh run (or a checkpoint from before a field existed) lacks."""
        if not self.average:
            self.average = [math.nan] * num_tasks
        if len(self.variance) != num_tasks:
            self.variance = [math.nan] * num_tasks
        if len(self.measured_step) != num_tasks:
            self.measured_step = [-1 if math.isnan(a) else 0 for a in self.average]

    def is_new(self, latest: Measurement | None) -> bool:
        return latest is not None and latest.step > self.ingested_step

    def fold(self, latest: Measurement, now: int) -> Tensor:
        """Fold ``latest`` in at ``global_step`` ``now``; return the ``[K]`` mask of corrupt
        (non-finite where valid) values, which were skipped."""
        values, valid = latest.values, latest.valid
        old = torch.tensor(self.average, dtype=torch.float64)
        new = values.detach().to("cpu", torch.float64)
        corrupt = torch.isinf(new) | (torch.isnan(new) & valid.cpu())
        new = torch.where(corrupt, torch.nan, new)  # skipped: the EMA keeps its value
        fresh, seen = ~torch.isnan(new), ~torch.isnan(old)
        blended = torch.where(seen, self.ema * old + (1 - self.ema) * new, new)
        self.average = torch.where(fresh, blended, old).tolist()
        se = latest.stderr
        var_new = (
            torch.full_like(new, math.nan)
            if se is None
            else se.detach().to("cpu", torch.float64) ** 2
        )
        var_old = torch.tensor(self.variance, dtype=torch.float64)
        var_blend = torch.where(
            seen, self.ema**2 * var_old + (1 - self.ema) ** 2 * var_new, var_new
        )
        self.variance = torch.where(fresh, var_blend, var_old).tolist()
        self.measured_step = [
            now if ok else last for ok, last in zip(fresh.tolist(), self.measured_step, strict=True)
        ]
        self.ingested_step = latest.step
        return corrupt

    def state_dict(self) -> dict[str, Any]:
        return {
            "average": list(self.average),
            "variance": list(self.variance),
            "measured_step": list(self.measured_step),
            "ingested_step": self.ingested_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = [float(v) for v in state.get("average", [])]
        # A checkpoint from before the guarantee: unknown variances, so that run never holds.
        variance = state.get("variance", [math.nan] * len(self.average))
        self.variance = [float(v) for v in variance]
        self.measured_step = [int(v) for v in state.get("measured_step", [])]
        if len(self.measured_step) != len(self.average):  # a checkpoint from before it existed
            self.measured_step = [-1 if math.isnan(a) else 0 for a in self.average]
        self.ingested_step = int(state.get("ingested_step", -1))
