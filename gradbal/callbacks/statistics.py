"""The statistic bus: callbacks that measure a per-task statistic, and how consumers find them.

A *source* is a callback that measures one per-task statistic and exposes its newest value as a
:class:`Measurement`; it declares the statistic's name in ``provides`` (``"grad_norm_sq"``:
:class:`TaskGradNormMonitor`, ``"learning_gain"``: :class:`LearningGainMonitor`,
``"grad_ratio_rejected_over_chosen"``: :class:`PreferenceGradientMonitor`; the pooled sources
of issue 15, each with a standard error: ``"learnability"``, ``"nonzero_advantage_share"``,
``"mean_abs_advantage"``, ``"learning_progress"``, ``"learning_progress_signed"``,
``"task_loss"``, ``"excess_loss"``, ``"reward_margin"``, ``"reward_accuracy"``,
``"grad_norm_sq_pooled"``, ``"reward_shortfall"``, ``"loss_ratio"``, see the README's
"Statistic sources"). A *consumer* (the
sampling scheduler and the loss reweighter, for the statistic their rule declares in
``TaskWeighting.statistics``; ``FAMOReweighter``, for task losses; the learning-gain monitor,
for gradient norms) finds the source by
that name among ``trainer.callbacks`` with :func:`find_source`, and judges freshness by
:attr:`Measurement.step`. So a new statistic is one new callback that subclasses
:class:`StatisticSource`, and a new rule is one new ``TaskWeighting`` naming it; neither edits
the consumers.

Example::

    >>> import torch
    >>> from lightning.pytorch import Callback
    >>> class Constant(Callback, StatisticSource):
    ...     provides = "constant"
    ...     def latest(self):
    ...         return Measurement(0, torch.tensor([1.0, 2.0]), torch.tensor([True, True]))
    >>> Constant().latest().values
    tensor([1., 2.])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from gradbal.callbacks._prerequisites import callbacks_of


@dataclass(frozen=True)
class Measurement:
    """One measurement of a per-task statistic.

    Attributes:
        step: When it was measured, in the source's own count of optimiser steps (it only has
            to grow from one measurement to the next: a consumer folds a measurement in once,
            when its ``step`` is newer than the last one it saw).
        values: ``[K]`` the statistic per task, in the order of ``trainer.datamodule.task_names``
            (NaN where the task was not measured).
        valid: ``[K]`` bool, the task was measured in this measurement. A NaN where ``valid``
            is set is a corrupt measurement (consumers skip it and warn), a NaN elsewhere an
            absent one.
        stderr: ``[K]`` standard error of ``values``, or ``None`` if the source does not
            estimate one.

    Raises:
        ValueError: If ``values`` is not 1-D, or ``valid`` (or ``stderr``) has another shape,
            or ``valid`` is not bool.
    """

    step: int
    values: Tensor
    valid: Tensor
    stderr: Tensor | None = None

    def __post_init__(self) -> None:
        if self.values.dim() != 1:
            raise ValueError(
                f"Measurement.values must be [K], one value per task. Got shape "
                f"{tuple(self.values.shape)}."
            )
        if self.valid.shape != self.values.shape or self.valid.dtype != torch.bool:
            raise ValueError(
                f"Measurement.valid must be a bool tensor of the shape of values "
                f"{tuple(self.values.shape)}. Got {self.valid.dtype} of shape "
                f"{tuple(self.valid.shape)}."
            )
        if self.stderr is not None and self.stderr.shape != self.values.shape:
            raise ValueError(
                f"Measurement.stderr must have the shape of values {tuple(self.values.shape)} "
                f"(or be None). Got {tuple(self.stderr.shape)}."
            )


class StatisticSource:
    """A mixin for a callback that provides a per-task statistic to the callbacks that read it.

    Subclass it beside ``lightning.pytorch.Callback`` (``class MyStat(Callback,
    StatisticSource)``), set ``provides`` and implement :meth:`latest`. Keep what ``latest``
    needs in the callback's ``state_dict`` so that a resumed run reads what the uninterrupted
    one would.

    Attributes:
        provides: The statistic's name, what ``TaskWeighting.statistic`` of a rule reading it
            says (``"grad_norm_sq"``, ``"learning_gain"``...).
    """

    provides: ClassVar[str]

    def latest(self) -> Measurement | None:
        """The newest measurement, or ``None`` before the first."""
        raise NotImplementedError(f"{type(self).__name__} must implement `latest()`.")

    def update(self, trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> None:
        """Bring :meth:`latest` up to date with the training batch that just ended.

        Consumers call it from ``on_train_batch_end`` before reading :meth:`latest`, so they see
        the batch's measurement whatever the order of the callbacks. It must be idempotent (the
        source's own hook may run before or after). The default does nothing: a source that
        measures before ``on_train_batch_end`` (e.g. in ``on_before_optimizer_step``) needs
        nothing here.
        """

    def measured_every_n_steps(self, trainer: Trainer) -> int | None:
        """``n`` if the source measures the optimiser steps ``s`` with ``(s + 1) % n == 0`` and
        needs several samples of every task in their batches (the sampling scheduler then asks
        the DataModule for them: ``min_groups_per_task``); ``None`` (the default) otherwise."""
        return None


def statistic_sources(trainer: Trainer, provides: str | None = None) -> list[StatisticSource]:
    """The callbacks of ``trainer`` that are sources (of ``provides`` only, if given)."""
    return [
        cb
        for cb in callbacks_of(trainer)
        if isinstance(cb, StatisticSource) and provides in (None, cb.provides)
    ]


def find_source(trainer: Trainer, provides: str, owner: str, why: str) -> StatisticSource:
    """The one callback among ``trainer.callbacks`` that provides ``provides``.

    Args:
        trainer: The Trainer.
        provides: The statistic's name.
        owner: The consumer's name, for the message.
        why: What the consumer reads it for, for the message (``"reads 'grad_norm_sq' for
            InverseGradNorm(power=1.0)"``).

    Raises:
        RuntimeError: If no callback or several provide it; the message names the callback
            classes known to provide it, and what the Trainer's callbacks provide now.
    """
    found = statistic_sources(trainer, provides)
    if len(found) == 1:
        return found[0]
    known = _known_providers(provides)
    kind = " or ".join(known) if known else f"callback providing {provides!r}"
    example = (
        f"`{known[0]}(...)`"
        if known
        else f"a callback that subclasses gradbal.callbacks.StatisticSource with provides="
        f"{provides!r}"
    )
    fix = f"Add {example}" if not found else f"Keep only one of {[type(s).__name__ for s in found]}"
    available = {type(s).__name__: s.provides for s in statistic_sources(trainer)}
    raise RuntimeError(
        f"{owner} {why}, so it needs exactly one {kind} in the Trainer's callbacks; found "
        f"{len(found)}. {fix} in `Trainer(callbacks=[...])` (in YAML: `trainer.callbacks`); "
        f"their order does not matter. The callbacks provide now: {available or 'nothing'}."
    )


def _known_providers(provides: str) -> list[str]:
    """Names of the imported :class:`StatisticSource` classes that provide ``provides``."""
    names: list[str] = []
    todo: list[type[Any]] = list(StatisticSource.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if getattr(cls, "provides", None) == provides and cls.__name__ not in names:
            names.append(cls.__name__)
    return names
