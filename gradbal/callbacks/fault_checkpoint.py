"""FaultCheckpoint: a crash, Ctrl-C or SIGTERM leaves a checkpoint and the command to resume."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

__all__ = ["FaultCheckpoint"]


class FaultCheckpoint(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint``, plus a prompt stop on SIGTERM and a resume hint.

    On an exception (``KeyboardInterrupt`` included) it saves ``<dirpath>/<filename>.ckpt`` and
    prints where, and how to resume. On SIGTERM, what a cluster sends before pre-empting a job,
    it stops after the optimiser step in progress (Lightning alone would run to the end of the
    epoch in a single process; under DDP Lightning already stops every rank at the next batch)
    and saves the same checkpoint. A successful run deletes the file, as Lightning's callback
    does. ``gradbal fit`` adds one unless the config has an ``OnExceptionCheckpoint``.

    Args:
        dirpath: Directory of the checkpoint.
        filename: File name without ``.ckpt``.
        resume_command: The command that resumes, printed with ``--ckpt_path <file>`` appended
            (the CLI fills it from its own command line). ``None``: print the ``trainer.fit``
            argument instead.
    """

    def __init__(
        self, dirpath: str, filename: str = "on_exception", resume_command: str | None = None
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.resume_command = resume_command

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # At the start of the next batch, the previous step is complete, metrics included.
        if trainer.received_sigterm and trainer.world_size == 1:
            raise SIGTERMException()

    @override
    def on_exception(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_exception(trainer, *args, **kwargs)
        exception = args[1] if len(args) > 1 else kwargs.get("exception")
        if not trainer.is_global_zero:
            return
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else type(exception).__name__
        how = (
            f"{self.resume_command} --ckpt_path {self.ckpt_path}"
            if self.resume_command is not None
            else f"trainer.fit(model, datamodule, ckpt_path={self.ckpt_path!r})"
        )
        print(
            f"\n[gradbal] Stopped by {what} at step {trainer.global_step}; saved "
            f"{self.ckpt_path}.\n[gradbal] Resume with: {how}",
            file=sys.stderr,
            flush=True,
        )
