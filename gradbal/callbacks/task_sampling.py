"""TaskSamplingScheduler: turn per-task statistics into the DataModule's sampling probabilities."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from gradbal.callbacks._prerequisites import datamodule_of, sole_writer, task_names
from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.metric_names import SAMPLING_PROB, SAMPLING_STAT_AGE, metric_name
from gradbal.weighting import TaskWeighting


class TaskSamplingScheduler(Callback):
    """Sets the DataModule's task sampling probabilities from measured statistics and a rule.

    After every batch, the newest measurement of the rule's statistic (``rule.statistic``, read
    from the callback that provides it, ``gradbal.callbacks.statistics``: the squared gradient
    norms of :class:`TaskGradNormMonitor`, the gains of :class:`LearningGainMonitor`, or a
    statistic of your own; none for ``Uniform``/``Fixed``) is folded into a
    per-task exponential moving average. At each update (``every``) the averages are clamped to
    at least ``1e-2`` times the largest (the unbiased estimate can be negative), passed through
    the rule, sharpened or flattened by ``temperature``, mixed with the uniform distribution so
    every task keeps at least ``floor``, and handed to ``datamodule.set_sampling_probs``; batches
    drawn after that use them (one batch is already prefetched when ``every`` is a step count).
    Until some task has been measured, the probabilities stay as they are; a task not measured
    yet keeps its current share while the measured tasks are updated (a warning names it at every
    such update, and ``train/sampling_stat_age/<task>`` grows). Rules that read no statistic
    (``Uniform``, ``Fixed``) are applied once before the first batch.

    The floor keeps a task *trained on*, not *measured*: a gradient norm needs at least 2 groups
    of the task in one measured step, which at ``p = 0.02`` and 8 prompts per step happens in 1%
    of steps. So with a gradient rule the scheduler asks the DataModule
    (``set_measured_steps``, :class:`MultiTaskDataModule` has it) to draw at least
    ``min_groups_per_task`` prompts of every task in each batch of the monitor's measured steps
    (or of the next tasks in rotation, if the batch is too small for all), topping up the
    normal draw; other steps are drawn from the probabilities alone.

    The statistic folded in after a batch is the one measured in that batch, whatever the order
    of the callbacks in the Trainer's list.

    Measurement guarantee: with a source that reports standard errors (the pooled sources,
    e.g. :class:`LearnabilityMonitor`), an update at which every pair of tasks' averages differs
    by less than 2 standard errors of the difference keeps the current probabilities; the first
    such update warns with the numbers (``schedule.num_held`` counts them).

    Every input is all-reduced by the monitors and the result is broadcast from rank 0, so the
    probabilities are identical on every rank. The DataModule is the source of truth for the
    probabilities in use (``sampling_probs``; :class:`MultiTaskDataModule` keeps them, with its
    sampler, in its own checkpoint state): the scheduler reads them there at each update and
    keeps no copy in its :meth:`state_dict` (the averages and counters), so a resumed run samples
    exactly as the uninterrupted one.

    Logged: ``train/sampling_prob/<task>`` every batch, the DataModule's current probabilities
    (this callback is the one emitter of that key: gradbal's modules do not log it); with a rule
    that reads a statistic, ``train/sampling_stat_age/<task>``: optimiser steps since the task
    was last measured (since the start if never).

    Args:
        rule: The weighting rule, e.g. ``InverseGradNorm()`` (``gradbal.weighting``).
        every: ``"epoch"``: update at the last batch of every training epoch (before a
            checkpoint of that step is saved); an int ``n``: every ``n`` optimiser steps.
        ema: Decay of the moving average of the statistic, in ``[0, 1)`` (0: latest only).
        floor: Minimum probability of every task, in ``[0, 1 / num_tasks]``.
        temperature: ``p ∝ rule(stats) ** (1 / temperature)``, > 0 (> 1: closer to uniform).
        min_groups_per_task: With a gradient-norm rule: prompts of each task the DataModule
            draws in every batch of a measured step (2: the estimator's minimum; 0: off).

    Raises:
        TypeError: If ``rule`` is not a ``TaskWeighting``.
        ValueError: On an out-of-range argument; at ``setup`` if the rule rejects the number of
            tasks (``Fixed`` of another length).
        RuntimeError: At ``setup`` beside another ``TaskSamplingScheduler`` (two writers of
            the sampling probabilities), if ``trainer.datamodule`` lacks ``task_names`` or
            ``set_sampling_probs``, the rule's monitor is not among the callbacks, or
            ``floor * num_tasks > 1``; at train start with ``every="epoch"`` and an epoch of
            unknown length.

    Attributes:
        probs: The last probabilities this callback handed to the DataModule (task order); at
            fit start the DataModule's own. A record, not state: updates and logs read the
            DataModule's ``sampling_probs`` (this record only for a DataModule without them).
        writes: ``"sampling_probs"``, the state it owns: a Trainer with two callbacks that
            write it is refused at ``setup`` (docs/errors.md C05).

    Example::

        >>> from gradbal.weighting import InverseGradNorm
        >>> scheduler = TaskSamplingScheduler(InverseGradNorm(), every=50, floor=0.05)
        >>> scheduler.state_key
        "TaskSamplingScheduler{'rule': 'InverseGradNorm(power=1.0)', 'every': 50, 'ema': 0.9, 'floor': 0.05, 'temperature': 1.0}"
    """

    writes: ClassVar[str] = "sampling_probs"
    task_metric_groups = (
        metric_name("train", SAMPLING_PROB),
        metric_name("train", SAMPLING_STAT_AGE),
    )

    def __init__(
        self,
        rule: TaskWeighting,
        every: Literal["epoch"] | int = "epoch",
        ema: float = 0.9,
        floor: float = 0.01,
        temperature: float = 1.0,
        min_groups_per_task: int = 2,
    ):
        if min_groups_per_task < 0:
            raise ValueError(
                f"TaskSamplingScheduler `min_groups_per_task` must be >= 0 (0: no measured-step "
                f"coverage). Got {min_groups_per_task}."
            )
        self.min_groups_per_task = min_groups_per_task
        self.schedule = RuleSchedule(type(self).__name__, rule, every, ema, floor, temperature)
        self.rule, self.every, self.ema = rule, every, ema
        self.floor, self.temperature = floor, temperature
        self.probs: list[float] | None = None
        self._task_names: list[str] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            rule=repr(self.rule),
            every=self.every,
            ema=self.ema,
            floor=self.floor,
            temperature=self.temperature,
        )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        sole_writer(trainer, self.writes)
        owner = type(self).__name__
        self._task_names = task_names(trainer, owner)
        dm = datamodule_of(trainer)
        if not callable(getattr(dm, "set_sampling_probs", None)):
            raise RuntimeError(
                f"{owner} changes the task mixture through `datamodule.set_sampling_probs(probs)`"
                f", which {type(dm).__name__} does not have. Use "
                "gradbal.datamodules.MultiTaskDataModule, add that method (probabilities in "
                "task order) to your DataModule, or reweight losses with TaskLossReweighter."
            )
        self.schedule.setup(trainer, self._task_names)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        add_task_layout(trainer, self)
        dm = datamodule_of(trainer)
        current = self._current(trainer)
        if current is not None:
            self.probs = current
        self._request_measured_steps(trainer, dm)

    def _request_measured_steps(self, trainer: Trainer, dm: Any) -> None:
        """Ask the DataModule for every task in the measured steps of the statistic's source."""
        source = self.schedule.source
        every = None if source is None else source.measured_every_n_steps(trainer)
        if every is None or self.min_groups_per_task == 0:
            return
        owner = type(self).__name__
        if not callable(getattr(dm, "set_measured_steps", None)):
            rank_zero_warn(
                f"{owner}: {type(dm).__name__} has no `set_measured_steps`, so a task with few "
                "prompts per step may go unmeasured for long stretches (it then keeps its "
                "share; see train/sampling_stat_age). Use gradbal's MultiTaskDataModule."
            )
            return
        # The source measures the steps s with (s + 1) % every == 0.
        dm.set_measured_steps(every, self.min_groups_per_task)
        covered = getattr(dm, "tasks_per_measured_step", len(self._task_names))
        batch = getattr(dm, "batch_size", "?")
        if covered == 0:
            rank_zero_warn(
                f"{owner}: batch_size {batch} cannot hold min_groups_per_task="
                f"{self.min_groups_per_task} prompts of any task, so no measured step is "
                "guaranteed to measure a task. Raise the batch size (per device) to at least "
                f"{self.min_groups_per_task}."
            )
        elif covered < len(self._task_names):
            rank_zero_info(
                f"{owner}: batch_size {batch} holds {self.min_groups_per_task} prompts of only "
                f"{covered} of the {len(self._task_names)} tasks, so each measured step "
                f"measures {covered} tasks in rotation (every task at least every "
                f"{-(-len(self._task_names) // covered)} measured steps)."
            )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every == "epoch" and not math.isfinite(trainer.num_training_batches):
            raise RuntimeError(
                f"{type(self).__name__}(every='epoch') updates at the last batch of an epoch, "
                "but the training dataloader has no length. Set `every` to a number of steps."
            )
        if self.rule.statistic is None and self.schedule.num_updates == 0:
            self._update(trainer)  # Uniform / Fixed need no measurement: apply before batch 0

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.schedule.ingest(trainer, pl_module, batch_idx)
        if self.rule.statistic is not None:
            ages = self.schedule.stat_age(trainer.global_step)
            age_names = [metric_name("train", SAMPLING_STAT_AGE, n) for n in self._task_names]
            pl_module.log_dict(
                dict(zip(age_names, ages, strict=True)), on_step=True, on_epoch=False
            )
        current = self._current(trainer)
        if current is not None:
            names = [metric_name("train", SAMPLING_PROB, n) for n in self._task_names]
            pl_module.log_dict(dict(zip(names, current, strict=True)), on_step=True, on_epoch=False)
        if self.schedule.due(trainer, batch_idx):
            self._update(trainer)

    def _current(self, trainer: Trainer) -> list[float] | None:
        """The probabilities in use: the DataModule's (the source of truth), or, for a
        DataModule without ``sampling_probs``, the last ones this callback set there."""
        current = getattr(datamodule_of(trainer), "sampling_probs", None)
        return self.probs if current is None else [float(p) for p in current]

    def _update(self, trainer: Trainer) -> None:
        probs = self.schedule.probabilities(trainer, self._current(trainer))
        if probs is not None:
            self.probs = probs.tolist()
            datamodule_of(trainer).set_sampling_probs(self.probs)

    @override
    def state_dict(self) -> dict[str, Any]:
        # No "probs": the DataModule's checkpoint state holds the probabilities in use.
        return self.schedule.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict)
        # A checkpoint written before the DataModule became the one owner also holds "probs"
        # here: the same values as the DataModule's, kept only as the record.
        probs = state_dict.get("probs")
        if probs is not None:
            self.probs = [float(p) for p in probs]
