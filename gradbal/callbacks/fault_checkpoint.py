"""FaultCheckpoint: a crash, Ctrl-C or SIGTERM leaves a checkpoint and the command to resume."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from gradbal.callbacks.checkpoint_files import record_write, save_target, written_here

__all__ = ["FaultCheckpoint"]

# Exit status after SIGTERM: 128 + 15, as a process killed by the signal has. Lightning's bare
# SIGTERMException is a SystemExit with status 0, which reads as "finished" to a shell or a
# job scheduler.
_SIGTERM_EXIT = 128 + signal.SIGTERM


class FaultCheckpoint(Callback):
    """Saves on an exception, Ctrl-C or SIGTERM, stops promptly on SIGTERM, prints the resume.

    On an exception (``KeyboardInterrupt`` included) raised after at least one optimiser step of
    this process completed, it saves ``<dirpath>/<filename>.ckpt`` and prints where, and how to
    resume. An exception before that (while restoring a checkpoint, in setup, in the first step)
    saves nothing: the state is the one already on disk, and the checkpoint being resumed from
    must not be replaced by a broken or step-0 one. A file this process did not write that holds
    the same or a later step is never replaced (the save goes to ``<filename>-2.ckpt``).
    On SIGTERM, what a cluster sends before pre-empting a job, it stops after the optimiser step
    in progress (Lightning alone would run to the end of the epoch in a single process; under
    DDP Lightning already stops every rank at the next batch) and saves the same way; the
    process then exits with status 143 (128 + SIGTERM), not 0.

    A ``fit`` that ends normally deletes the file only if this process wrote it (a crash, then
    another ``fit`` in the same process that did not resume from it); a checkpoint from an
    earlier process, another run, or the one resumed from is never deleted. Unlike Lightning's ``OnExceptionCheckpoint`` this is
    not a ``Checkpoint`` callback, so it neither replaces Lightning's periodic checkpointing
    nor turns ``fit(ckpt_path=None)`` into ``"last"``. ``gradbal fit`` adds one unless the
    config has a ``FaultCheckpoint`` or ``OnExceptionCheckpoint``.

    Args:
        dirpath: Directory of the checkpoint.
        filename: File name without ``.ckpt``.
        resume_command: The command that resumes, printed with ``--ckpt_path <file>`` appended
            (the CLI fills it from its own command line). ``None``: print the ``trainer.fit``
            argument instead.

    Example::

        >>> FaultCheckpoint("runs/x/checkpoints").ckpt_path
        'runs/x/checkpoints/on_exception.ckpt'
    """

    def __init__(
        self, dirpath: str, filename: str = "on_exception", resume_command: str | None = None
    ) -> None:
        if not filename:
            raise ValueError("FaultCheckpoint: filename cannot be empty; use e.g. on_exception.")
        self.dirpath = dirpath
        self.filename = filename
        self.resume_command = resume_command
        self.saved_path: str | None = None  # what this process saved, if anything
        self._start_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        """The file saved on the last exception, else the default ``<dirpath>/<filename>.ckpt``."""
        return self.saved_path or os.path.join(self.dirpath, f"{self.filename}.ckpt")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step  # after any restore

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # At the start of the next batch, the previous step is complete, metrics included.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException(_SIGTERM_EXIT)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else type(exception).__name__
        if isinstance(exception, SIGTERMException) and not exception.code:
            exception.code = _SIGTERM_EXIT  # Lightning raises it bare, which exits 0
        if self._start_step is None or trainer.global_step <= self._start_step:
            if trainer.is_global_zero:
                print(
                    f"\n[gradbal] Stopped by {what} before the first optimiser step of this "
                    "run completed: nothing new to save, no checkpoint written.",
                    file=sys.stderr,
                    flush=True,
                )
            return
        default = os.path.join(self.dirpath, f"{self.filename}.ckpt")
        # No collective call here: an exception may have reached this rank alone. Only rank 0
        # writes, so only its choice of file matters.
        target = save_target(default, trainer.global_step)
        trainer.save_checkpoint(target)
        self.saved_path = target
        if not trainer.is_global_zero:
            return
        if os.path.isfile(target):
            record_write(target)
        how = (
            f"{self.resume_command} --ckpt_path {target}"
            if self.resume_command is not None
            else f"trainer.fit(model, datamodule, ckpt_path={target!r})"
        )
        print(
            f"\n[gradbal] Stopped by {what} at step {trainer.global_step}; saved "
            f"{target}.\n[gradbal] Resume with: {how}",
            file=sys.stderr,
            flush=True,
        )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Reached only when fit ends normally; delete only a file this process wrote, and not
        # the one this fit resumed from.
        if (
            stage == "fit"
            and self.saved_path is not None
            and trainer.is_global_zero
            and written_here(self.saved_path)
            and not _same_file(trainer.ckpt_path, self.saved_path)
        ):
            os.remove(self.saved_path)
            self.saved_path = None


def _same_file(a: Any, b: str) -> bool:
    return a is not None and os.path.exists(str(a)) and os.path.samefile(str(a), b)
