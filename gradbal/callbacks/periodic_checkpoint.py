"""PeriodicCheckpoint: ``last.ckpt`` every N optimiser steps and/or M minutes, and at the end."""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint
from typing_extensions import override

from gradbal.callbacks.checkpoint_files import record_write, save_target

__all__ = ["PeriodicCheckpoint"]


class PeriodicCheckpoint(Checkpoint):
    """Keeps one resumable checkpoint, ``<dirpath>/<filename>.ckpt``, fresh during training.

    It saves after every ``every_n_steps``-th optimiser step, after the first step that ends
    ``every_n_minutes`` or more after the previous save (whichever comes first), and when
    training ends, each time replacing the file (atomically under ``gradbal fit``, see
    :class:`~gradbal.checkpoint_io.AtomicCheckpointIO`). Only completed steps of this process
    are saved: a run that resumes and stops before its first step writes nothing. A file that
    this process did not write and that holds the same or a later step (the checkpoint a run
    resumed from, or another run's) is never replaced: the save goes to
    ``<filename>-2.ckpt`` beside it. Nothing is ever deleted.

    ``gradbal fit`` adds one (in ``<default_root_dir>/checkpoints/<run id>/``) unless the config
    has a ``ModelCheckpoint`` or ``PeriodicCheckpoint``, and fills in ``dirpath`` when it is
    ``None``; running the same command again resumes from the newest checkpoint there. Unlike
    Lightning's ``ModelCheckpoint`` the two periods combine, and the time-based decision is
    taken on rank 0 and broadcast, so every rank saves at the same step.

    Args:
        dirpath: Directory of the checkpoint; ``None``: ``<default_root_dir>/checkpoints``
            (the CLI sets its run directory).
        every_n_steps: Save after every N-th optimiser step; ``None``: not by step count.
        every_n_minutes: Save once this much wall-clock time passed since the last save;
            ``None``: not by time.
        filename: File name without ``.ckpt``.

    Raises:
        ValueError: if a period is not positive.

    Example::

        >>> PeriodicCheckpoint(every_n_steps=50, every_n_minutes=30).every_n_steps
        50
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_steps: int | None = 100,
        every_n_minutes: float | None = 30.0,
        filename: str = "last",
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(
                f"PeriodicCheckpoint: every_n_steps must be >= 1 or null, got {every_n_steps}. "
                "Set a positive step count, or null to save by time only."
            )
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(
                f"PeriodicCheckpoint: every_n_minutes must be > 0 or null, got "
                f"{every_n_minutes}. Set a positive number of minutes, or null to save by "
                "step count only."
            )
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps
        self.every_n_minutes = every_n_minutes
        self.filename = filename
        self.last_path: str | None = None  # the file this process saved last
        self._target: str | None = None
        self._saved_step = -1
        self._last_time = time.monotonic()

    @property
    def ckpt_path(self) -> str:
        """The default file, ``<dirpath>/<filename>.ckpt``."""
        return os.path.join(self.dirpath or "checkpoints", f"{self.filename}.ckpt")

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = trainer.global_step  # restored state is on disk already
        self._last_time = time.monotonic()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if step == self._saved_step:  # no optimiser step since (gradient accumulation)
            return
        due = self.every_n_steps is not None and step % self.every_n_steps == 0
        if self.every_n_minutes is not None:
            elapsed = time.monotonic() - self._last_time >= 60 * self.every_n_minutes
            due = due or bool(trainer.strategy.broadcast(elapsed, src=0))
        if due:
            self.save(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Save the current state (all ranks call this; Lightning writes on rank 0)."""
        if self._target is None:  # decided once: later saves replace this process's own file
            target = save_target(self.ckpt_path, trainer.global_step)
            self._target = str(trainer.strategy.broadcast(target, src=0))
        trainer.save_checkpoint(self._target)
        if trainer.is_global_zero and os.path.isfile(self._target):
            record_write(self._target)
        self.last_path = self._target
        self._saved_step = trainer.global_step
        self._last_time = time.monotonic()
