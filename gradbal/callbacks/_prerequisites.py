"""Checks every gradbal callback runs in ``setup``: what it needs from the trainer, with fixes."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, Trainer


# Lightning's connectors set these Trainer attributes at runtime, out of the type checker's view.
def datamodule_of(trainer: Trainer) -> Any:
    """``trainer.datamodule`` (``None`` when fitting with bare dataloaders)."""
    return trainer.datamodule  # type: ignore[attr-defined]


def callbacks_of(trainer: Trainer) -> list[Callback]:
    """``trainer.callbacks``."""
    return list(trainer.callbacks)  # type: ignore[attr-defined]


def task_names(trainer: Trainer, owner: str) -> list[str]:
    """``trainer.datamodule.task_names``, or a ``RuntimeError`` that says how to provide it."""
    dm = datamodule_of(trainer)
    names = getattr(dm, "task_names", None)
    if not names or not all(isinstance(n, str) for n in names):
        found = "there is no DataModule" if dm is None else f"{type(dm).__name__} has {names!r}"
        raise RuntimeError(
            f"{owner} reads the task names from `trainer.datamodule.task_names`, but {found}. "
            "Fit with a DataModule that has a `task_names` list of strings (the batches' task "
            "ids index it), e.g. gradbal.datamodules.MultiTaskDataModule."
        )
    return list(names)


def require_logger(trainer: Trainer, owner: str) -> None:
    """Raise if the trainer has no logger (a monitor would compute values nobody sees)."""
    if not trainer.loggers:
        raise RuntimeError(
            f"Cannot use {owner} with a Trainer that has no logger: it only logs. Pass a "
            "logger (or remove `logger=False`), or remove the callback."
        )
