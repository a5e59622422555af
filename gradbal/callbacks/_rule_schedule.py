"""What TaskSamplingScheduler and TaskLossReweighter share: statistic -> EMA -> rule -> probabilities.

Composition, not a base class: each callback owns one :class:`RuleSchedule`, calls it from its
hooks, and applies the probabilities its own way (sampling probabilities or loss weights).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from gradbal.callbacks._prerequisites import datamodule_of
from gradbal.callbacks._statistic_average import StatisticAverage
from gradbal.callbacks.statistics import StatisticSource, find_source
from gradbal.weighting import TaskWeighting

Every = Literal["epoch"] | int

# Statistics are clamped to at least this fraction of the largest one before a rule sees them:
# the unbiased squared-norm estimate and the learning gain can be <= 0, rules need > 0, and a
# relative floor keeps every rule scale-invariant. 1e-2 bounds the spread a rule sees to 100x in
# squared norm (the paper reports up to 33x), so a task with no gradient signal at all (every
# group all-correct or all-wrong) gets at most 10x the samples of the largest under
# InverseGradNorm(power=1), not an unbounded share.
STAT_FLOOR = 1e-2

# The measurement guarantee: with standard errors from the source, an update whose tasks all
# differ by less than this many standard errors of their difference leaves the mixture alone.
NOISE_SIGMAS = 2.0


class RuleSchedule:
    """EMA of a per-task statistic and the rule that turns it into probabilities.

    Args:
        owner: The callback's class name, for messages.
        rule: The weighting rule.
        every: ``"epoch"`` (at the last batch of each training epoch) or a number of optimiser
            steps.
        ema: Decay of the exponential moving average of the statistic, in ``[0, 1)`` (0: the
            latest measurement only). A task's first measurement initialises its average.
        floor: Minimum probability of every task, in ``[0, 1 / K]``: ``p = floor + (1 - K *
            floor) * p_rule``, so no task stops being trained on. The floor does not keep a task
            *measured* (a gradient norm needs >= 2 of its groups in one measured step; at
            ``p = 0.02`` and 8 prompts a step that is 1% of steps): that is the DataModule's
            measured-step coverage (``TaskSamplingScheduler(min_groups_per_task=...)``).
        temperature: ``p_rule ∝ rule(stats) ** (1 / temperature)``; > 1 flattens towards
            uniform, < 1 sharpens.

    Measurement guarantee: when the source reports standard errors (``Measurement.stderr``),
    the EMA also carries the variance of each average (``v <- ema**2 v + (1 - ema)**2 se**2``,
    exact for independent measurements; a task's first measurement sets ``se**2``). At an
    update, if at least two tasks are measured, every measured task has a finite variance, and
    every pair differs by less than ``2 * sqrt(v_i + v_j)`` (two standard errors of the
    difference of the averages, before the clamp), the rule cannot tell the tasks apart: the
    update keeps the current probabilities (``None``), and the first such update warns, once,
    with the averages and standard errors. Sources without standard errors behave as before.

    A rule that reads several statistics (``rule.statistics``, e.g. ``GradNormTarget``) gets one
    moving average per statistic, each from its own source; a task counts as measured when
    every statistic has measured it, and an update holds only if every statistic is within
    noise. The rule is bound to the DataModule's task names at setup (``rule.bind``).
    """

    def __init__(
        self,
        owner: str,
        rule: TaskWeighting,
        every: Every,
        ema: float,
        floor: float,
        temperature: float,
    ):
        if not isinstance(rule, TaskWeighting):
            raise TypeError(
                f"{owner} `rule` must be a gradbal.weighting.TaskWeighting (e.g. "
                f"InverseGradNorm()). Got {type(rule).__name__}."
            )
        if not (every == "epoch" or (isinstance(every, int) and every >= 1)):
            raise ValueError(f"{owner} `every` must be 'epoch' or an int >= 1. Got {every!r}.")
        if not 0 <= ema < 1:
            raise ValueError(
                f"{owner} `ema` must be in [0, 1). Got {ema}. Use 0 to follow the latest "
                "measurement, or e.g. 0.8 to average over about 5 measurements."
            )
        if not 0 <= floor < 1:
            raise ValueError(f"{owner} `floor` must be in [0, 1). Got {floor}.")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"{owner} `temperature` must be finite and > 0. Got {temperature}.")
        self.owner, self.rule, self.every = owner, rule, every
        self.ema, self.floor, self.temperature = ema, floor, temperature
        self.sources: list[StatisticSource] = []  # one per rule.statistics, found at setup
        self.num_tasks = 0
        self.task_names: list[str] | None = None  # set by setup
        self._restored_names: list[str] | None = None  # a loaded state's tasks
        self._bound: TaskWeighting = rule  # rule.bind(task_names), set by setup
        # state: one moving average per statistic (at least one, so the state's keys are fixed)
        self.tracks = [StatisticAverage(ema) for _ in range(max(1, len(rule.statistics)))]
        self.num_held = 0  # updates that kept the mixture (differences within noise)
        self._warned_held = False
        self.updated_step = -1  # optimiser step of the last update
        self.num_updates = 0

    # The first statistic's state, under the names it had before rules read several.
    @property
    def source(self) -> StatisticSource | None:
        return self.sources[0] if self.sources else None

    @property
    def average(self) -> list[float]:
        """EMA per task of the (first) statistic, NaN until first measured."""
        return self.tracks[0].average

    @property
    def variance(self) -> list[float]:
        """Variance of each EMA of the (first) statistic, NaN without standard errors."""
        return self.tracks[0].variance

    @property
    def measured_step(self) -> list[int]:
        """Per task: the global_step when last measured (every statistic), -1: never."""
        steps = [t.measured_step for t in self.tracks]
        return [min(s) for s in zip(*steps, strict=True)] if len(steps) > 1 else steps[0]

    @property
    def ingested_step(self) -> int:
        """The source's step of the last (first-statistic) measurement folded in."""
        return self.tracks[0].ingested_step

    def setup(self, trainer: Trainer, task_names: list[str]) -> None:
        """Find the statistic's source and check the config against the tasks.

        Lightning restores a checkpoint's callback state *after* ``setup``, so a restored state
        is checked against these tasks in :meth:`load_state_dict`.
        """
        num_tasks = len(task_names)
        self.task_names = list(task_names)
        if self.floor * num_tasks > 1:
            raise RuntimeError(
                f"{self.owner} floor={self.floor} with {num_tasks} tasks would need "
                f"{self.floor * num_tasks:.2f} > 1 of the probability mass. Set floor <= "
                f"{1 / num_tasks:.4f}."
            )
        self._bound = self.rule.bind(task_names)  # a task graph naming unknown tasks raises
        rows = len(self.rule.statistics)
        shape = (rows, num_tasks) if rows > 1 else (num_tasks,)
        self._bound(torch.ones(shape, dtype=torch.float64))  # e.g. Fixed with the wrong length
        self.sources = [
            find_source(trainer, statistic, self.owner, f"reads {statistic!r} for {self.rule!r}")
            for statistic in self.rule.statistics
        ]
        self._check_restored(len(self.average), self._restored_names)
        self.num_tasks = num_tasks
        for track in self.tracks:
            track.setup(num_tasks)

    def ingest(self, trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> None:
        """Fold the measurement of the batch that just ended into the EMA (once per measurement).

        Called from ``on_train_batch_end``. The statistic is the one *of this batch* whatever
        the order of the callbacks: the source's ``update`` brings it up to this batch first (the
        gradient monitor measures in ``on_before_optimizer_step``, before any
        ``on_train_batch_end``; the learning-gain monitor records the batch there if its own
        ``on_train_batch_end`` has not run yet). A measurement is folded in once: when its
        ``step`` is newer than the last one folded in.
        """
        for source, track in zip(self.sources, self.tracks, strict=False):
            source.update(trainer, pl_module, batch_idx)
            latest = source.latest()
            if latest is None or not track.is_new(latest):
                continue
            # global_step: steps done at this batch's end, the same for every source
            corrupt = track.fold(latest, trainer.global_step)
            if corrupt.any():
                self._warn_corrupt(trainer, latest.step, corrupt, latest.values.double().cpu())

    def stat_age(self, step: int) -> list[float]:
        """Per task: optimiser steps since the batch of its last measurement (0 in that batch;
        ``step``, all of training, if it was never measured). A growing value is a task whose
        average is frozen."""
        return [float(step - max(last, 0)) for last in self.measured_step]

    def due(self, trainer: Trainer, batch_idx: int) -> bool:
        """Whether to update after this batch (once per optimiser step at most)."""
        step = trainer.global_step
        if step == self.updated_step:
            return False
        if self.every == "epoch":
            return batch_idx + 1 == trainer.num_training_batches
        return step > 0 and step % self.every == 0

    def probabilities(self, trainer: Trainer, current: list[float] | None = None) -> Tensor | None:
        """``[K]`` float64 probabilities, identical on every rank; ``None`` until some task has
        been measured.

        ``p = floor + (1 - K floor) * s``. Measured tasks share the mass of ``s`` by the rule
        (applied to their statistics only); a task without a measurement yet keeps its share of
        ``current`` (the probabilities in use; uniform if ``None``) and is named in a warning at
        every such update, so one unmeasured task never blocks the others.
        """
        self.updated_step = trainer.global_step
        k = self.num_tasks
        measured = torch.ones(k, dtype=torch.bool)
        if not self.sources:
            stats = torch.ones(k, dtype=torch.float64)
        else:
            rows = torch.tensor([t.average for t in self.tracks], dtype=torch.float64)  # [S, K]
            measured = ~torch.isnan(rows).any(0)
            if not measured.any():
                self._warn_missing(trainer, ~measured, kept=True)
                return None
            if self._within_noise(trainer, rows, measured):
                return None
            largest = rows[:, measured].max(1, keepdim=True).values  # [S, 1]
            floor = torch.where(largest > 0, STAT_FLOOR * largest, 1.0)
            rows = torch.where(largest > 0, rows.clamp_min(floor), torch.ones_like(rows))
            stats = rows if len(self.sources) > 1 else rows[0]
        rule = self._bound
        if not measured.all():
            assert self.task_names is not None
            rule = rule.bind(
                [n for n, m in zip(self.task_names, measured.tolist(), strict=True) if m]
            )
        # p_rule ** (1/T), normalised, in log space: no underflow to 0/0 for a small T.
        rule_probs = rule(stats[..., measured].double()).log() / self.temperature
        share = torch.zeros(k, dtype=torch.float64)
        share[measured] = torch.softmax(rule_probs, dim=0)
        if not measured.all():
            kept = self._current_share(current)
            kept[measured] = 0.0
            share = kept + (1 - kept.sum()) * share
            self._warn_missing(trainer, ~measured, kept=False)
        probs = self.floor + (1 - k * self.floor) * share
        if not torch.isfinite(probs).all():  # a rule's bug must not reach the sampler
            rank_zero_warn(
                f"{self.owner}: {self.rule!r} gave non-finite probabilities {probs.tolist()} "
                f"at step {trainer.global_step} from statistics {stats.tolist()}; keeping the "
                "current ones.",
                category=RuntimeWarning,
            )
            return None
        self.num_updates += 1
        # The inputs are already identical on every rank; the broadcast makes it a guarantee.
        return trainer.strategy.broadcast(probs, src=0)

    def _within_noise(self, trainer: Trainer, rows: Tensor, measured: Tensor) -> bool:
        """Whether, for every statistic (``rows``: ``[S, K]`` averages), every pair of measured
        averages differs by < 2 s.e. of the difference."""
        variances = torch.tensor([t.variance for t in self.tracks], dtype=torch.float64)
        pairs = ~torch.eye(int(measured.sum()), dtype=torch.bool)
        if int(measured.sum()) < 2 or not torch.isfinite(variances[:, measured]).all():
            return False
        for stats, variance in zip(rows, variances, strict=True):
            avg, var = stats[measured], variance[measured]
            diff = (avg[:, None] - avg[None, :]).abs()  # [M, M]
            bound = NOISE_SIGMAS * (var[:, None] + var[None, :]).sqrt()
            if not (diff[pairs] < bound[pairs]).all():
                return False
        avg, var = rows[0, measured], variances[0, measured]  # the warning shows the first
        diff = (avg[:, None] - avg[None, :]).abs()
        bound = NOISE_SIGMAS * (var[:, None] + var[None, :]).sqrt()
        self.num_held += 1
        if not self._warned_held:
            self._warned_held = True
            names = datamodule_of(trainer).task_names
            tasks = [names[i] for i in measured.nonzero().flatten().tolist()]
            shown = {
                t: f"{a:.4g} ± {v**0.5:.2g}"
                for t, a, v in zip(tasks, avg.tolist(), var.tolist(), strict=True)
            }
            ratio = float((diff[pairs] / bound[pairs]).max())
            rank_zero_warn(
                f"{self.owner} at step {trainer.global_step}: kept the current probabilities, "
                f"because the {self.rule.statistic!r} averages (± standard error) {shown}"
                f"{self._and_the_others()} differ "
                f"by less than {NOISE_SIGMAS:g} standard errors of their difference for every "
                f"pair of tasks (largest difference / bound = {ratio:.2f}): {self.rule!r} "
                "would act on noise. Later updates within noise keep them too, without this "
                "warning (counted in `num_held`). Pool more per measurement (a longer source "
                "window, a larger batch) or a higher `ema` to resolve smaller differences.",
                category=RuntimeWarning,
            )
        return True

    def _and_the_others(self) -> str:
        others = self.rule.statistics[1:]
        return f" (and those of {list(others)})" if others else ""

    def _current_share(self, current: list[float] | None) -> Tensor:
        """``s`` of the probabilities in use: ``(current - floor) / (1 - K floor)``, >= 0, sum 1."""
        k = self.num_tasks
        if current is None or len(current) != k or 1 - k * self.floor <= 0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        share = (torch.tensor(current, dtype=torch.float64) - self.floor).clamp_min(0)
        total = float(share.sum())
        return share / total if total > 0 else torch.full((k,), 1.0 / k, dtype=torch.float64)

    def _check_restored(self, count: int, names: list[str] | None) -> None:
        """Raise if a restored state was made with other tasks than the current ones."""
        current = self.task_names
        if current is None or (count == 0 and names is None):
            return
        if (names is not None and names != current) or count not in (0, len(current)):
            made = names if names is not None else f"{count} tasks"
            raise RuntimeError(
                f"{self.owner}'s checkpoint state was made with tasks {made}, but the "
                f"DataModule has {current}. The per-task averages would be applied to other "
                "tasks. Resume with the same task list (same names, same order), or start a new "
                "run from the weights only."
            )

    def state_dict(self) -> dict[str, Any]:
        first, *more = self.tracks
        state = {
            "task_names": self.task_names if self.task_names is not None else self._restored_names,
            **first.state_dict(),
            "num_held": self.num_held,
            "updated_step": self.updated_step,
            "num_updates": self.num_updates,
        }
        if more:  # a rule reading several statistics: the others' averages
            state["more_statistics"] = [t.state_dict() for t in more]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = state.get("task_names")
        self._restored_names = None if names is None else [str(n) for n in names]
        self._check_restored(len(state.get("average", [])), self._restored_names)
        self.tracks[0].load_state_dict(state)
        for track, saved in zip(self.tracks[1:], state.get("more_statistics", []), strict=False):
            track.load_state_dict(saved)
        self.num_held = int(state.get("num_held", 0))
        self.updated_step = int(state.get("updated_step", -1))
        self.num_updates = int(state.get("num_updates", 0))

    def _warn_corrupt(self, trainer: Trainer, step: int, corrupt: Tensor, new: Tensor) -> None:
        names = datamodule_of(trainer).task_names
        bad = {names[i]: float(new[i]) for i in corrupt.nonzero().flatten().tolist()}
        rank_zero_warn(
            f"{self.owner} skipped non-finite statistics {bad} measured at step {step}: those "
            "tasks keep their previous average, so the probabilities stay finite. A non-finite "
            "gradient usually means a non-finite loss; see the module's on_nonfinite_loss.",
            category=RuntimeWarning,
        )

    def _warn_missing(self, trainer: Trainer, missing: Tensor, *, kept: bool) -> None:
        names = datamodule_of(trainer).task_names
        absent = [names[i] for i in missing.nonzero().flatten().tolist()]
        what = (
            "keeps the current values of every task"
            if kept
            else f"updated the measured tasks; {absent} keep their current share"
        )
        rank_zero_warn(
            f"{self.owner} at step {trainer.global_step}: no measurement yet for tasks {absent}, "
            f"so it {what}. A gradient norm needs >= 2 groups of the task in one measured step "
            "(TaskSamplingScheduler draws them with min_groups_per_task; otherwise raise the "
            "batch size or measure more often); a learning gain needs the task in both windows.",
            category=RuntimeWarning,
        )
