"""TaskLossReweighter: turn per-task statistics into the LightningModule's task loss weights."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._prerequisites import sole_writer, task_names
from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.metric_names import LOSS_WEIGHT, LOSS_WEIGHT_STAT_AGE, metric_name
from gradbal.task_losses import set_task_loss_weights
from gradbal.types import TaskLosses
from gradbal.weighting import TaskWeighting


class TaskLossReweighter(Callback):
    """Sets per-task loss weights from measured statistics and a rule (sampling unchanged).

    The same pipeline as :class:`TaskSamplingScheduler` (moving average of the rule's statistic,
    clamp, rule, ``temperature``, ``floor``), but the probabilities ``p`` become loss weights
    ``w = K * p``, which average 1 (gradbal's convention: the loss keeps its scale), set with
    :func:`gradbal.set_task_loss_weights` (``Uniform`` / ``Fixed``: once, before the first
    batch). The module applies them in
    :func:`gradbal.report_task_losses`: its loss is ``sum_i w[task_i] * losses_i``. Weights
    start at 1 and are identical on every rank; averages, counters and the last weights are in
    :meth:`state_dict` and restored into the module at fit start.

    :class:`TaskGradNormMonitor` divides the weights out, so gradient rules see the unweighted
    task gradients: ``InverseGradNorm()`` gives ``w_k ∝ 1 / ||G_k||``, equal weighted norms.

    A task not measured yet keeps its current weight while the measured tasks are updated (a
    warning names it at every such update). The statistic folded in after a batch is the one
    measured in that batch, whatever the order of the callbacks. With a source that reports
    standard errors, an update whose statistics all lie within 2 standard errors of each other
    keeps the current weights (the measurement guarantee of :class:`TaskSamplingScheduler`).

    Logged: ``train/loss_weight/<task>`` every batch; with a rule that reads a statistic,
    ``train/loss_weight_stat_age/<task>``: optimiser steps since the task was last measured.

    Contract with the LightningModule: ``training_step`` returns
    ``gradbal.report_task_losses(self, losses, task_ids, group_ids)`` (gradbal's modules do); a
    module that builds its loss another way ignores the weights.

    Args:
        rule: The weighting rule, e.g. ``InverseGradNorm()`` (``gradbal.weighting``).
        every: ``"epoch"``: update at the last batch of every training epoch; an int ``n``:
            every ``n`` optimiser steps.
        ema: Decay of the moving average of the statistic, in ``[0, 1)``.
        floor: Minimum of ``p = w / K`` for every task, in ``[0, 1 / num_tasks]``.
        temperature: ``p ∝ rule(stats) ** (1 / temperature)``, > 0.

    Raises:
        TypeError: If ``rule`` is not a ``TaskWeighting``.
        ValueError: On an out-of-range argument; at ``setup`` if the rule rejects the number of
            tasks.
        RuntimeError: At ``setup`` beside another callback that sets the task loss weights
            (:class:`FAMOReweighter`, another ``TaskLossReweighter``), without
            ``trainer.datamodule.task_names``, without the rule's monitor, or with
            ``floor * num_tasks > 1``; at the first backward if the module did
            not set ``task_losses``.

    Attributes:
        weights: The current loss weights (task order), or ``None`` before fit start.
        writes: ``"task_loss_weights"``, the state it owns: a Trainer with two callbacks that
            write it is refused at ``setup`` (docs/errors.md F11).

    Example::

        >>> from gradbal.weighting import Fixed
        >>> reweighter = TaskLossReweighter(Fixed([2.0, 1.0, 1.0]))
        >>> reweighter.task_metric_groups
        ('train/loss_weight', 'train/loss_weight_stat_age')
    """

    writes: ClassVar[str] = "task_loss_weights"
    task_metric_groups = (
        metric_name("train", LOSS_WEIGHT),
        metric_name("train", LOSS_WEIGHT_STAT_AGE),
    )

    def __init__(
        self,
        rule: TaskWeighting,
        every: Literal["epoch"] | int = "epoch",
        ema: float = 0.9,
        floor: float = 0.01,
        temperature: float = 1.0,
    ):
        self.schedule = RuleSchedule(type(self).__name__, rule, every, ema, floor, temperature)
        self.rule, self.every, self.ema = rule, every, ema
        self.floor, self.temperature = floor, temperature
        self.weights: list[float] | None = None
        self._task_names: list[str] = []
        self._checked = False

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
        self._task_names = task_names(trainer, type(self).__name__)
        self.schedule.setup(trainer, self._task_names)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        add_task_layout(trainer, self)
        if self.weights is None:  # not restored from a checkpoint
            self.weights = [1.0] * len(self._task_names)
        set_task_loss_weights(pl_module, self.weights)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rule.statistic is None and self.schedule.num_updates == 0:
            self._update(trainer, pl_module)  # Uniform / Fixed: apply before the first batch

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: Tensor
    ) -> None:
        if self._checked:
            return
        if not isinstance(getattr(pl_module, "task_losses", None), TaskLosses):
            raise RuntimeError(
                f"TaskLossReweighter's weights reach the loss through "
                f"`gradbal.report_task_losses`, but {type(pl_module).__name__}.task_losses is "
                "not set. In training_step, return `gradbal.report_task_losses(self, losses, "
                "task_ids)` (per-sample losses, reduction='none')."
            )
        self._checked = True

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
            age_names = [metric_name("train", LOSS_WEIGHT_STAT_AGE, n) for n in self._task_names]
            pl_module.log_dict(
                dict(zip(age_names, ages, strict=True)), on_step=True, on_epoch=False
            )
        if self.weights is not None:
            names = [metric_name("train", LOSS_WEIGHT, n) for n in self._task_names]
            pl_module.log_dict(
                dict(zip(names, self.weights, strict=True)), on_step=True, on_epoch=False
            )
        if self.schedule.due(trainer, batch_idx):
            self._update(trainer, pl_module)

    def _update(self, trainer: Trainer, pl_module: LightningModule) -> None:
        k = len(self._task_names)
        current = None if self.weights is None else [w / k for w in self.weights]
        probs = self.schedule.probabilities(trainer, current)
        if probs is not None:
            self.weights = (len(self._task_names) * probs).tolist()
            set_task_loss_weights(pl_module, self.weights)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self.schedule.state_dict(), "weights": self.weights}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict)
        weights = state_dict.get("weights")
        self.weights = None if weights is None else [float(w) for w in weights]
