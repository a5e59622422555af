"""One TensorBoard chart per per-task metric group, every task's curve in it (custom scalars)."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from gradbal.callbacks._prerequisites import callbacks_of


@runtime_checkable
class LogsTaskMetrics(Protocol):
    """A callback that logs ``<group>/<task>`` curves; each group gets one multi-line chart."""

    task_metric_groups: tuple[str, ...]


def add_task_layout(trainer: Trainer, owner: Callback) -> None:
    """Write the custom-scalar layout of every per-task group logged by the trainer's callbacks.

    TensorBoard reads one layout per run, so the first such callback in ``trainer.callbacks``
    writes the layout for all of them; the others return. Rank zero only; warns if no logger is
    a ``TensorBoardLogger`` (the per-tag curves are logged either way).
    """
    callbacks = [cb for cb in callbacks_of(trainer) if isinstance(cb, LogsTaskMetrics)]
    if not callbacks or callbacks[0] is not owner:
        return
    loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    if not loggers:
        rank_zero_warn(
            "gradbal writes the per-task chart layout (one chart per metric group, every task "
            "in it) only for TensorBoardLogger; with other loggers each task is its own curve."
        )
        return
    if not trainer.is_global_zero:
        return
    groups = dict.fromkeys(g for cb in callbacks for g in cb.task_metric_groups)
    charts = {g: ["Multiline", [rf"^{re.escape(g)}/[^/]+$"]] for g in groups}
    for logger in loggers:
        logger.experiment.add_custom_scalars({"per task": charts})
