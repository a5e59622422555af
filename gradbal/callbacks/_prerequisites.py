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


# For each piece of training state that callbacks write: its error code (docs/errors.md), what
# the state is, and how to choose between the callbacks that write it.
_WRITTEN_STATE = {
    "task_loss_weights": (
        "F11",
        "the module's task loss weights (`gradbal.set_task_loss_weights`)",
        "FAMOReweighter sets FAMO's weights; TaskLossReweighter a rule's (e.g. InverseGradNorm, "
        "GradNormTarget), one rule per reweighter.",
    ),
    "sampling_probs": (
        "C05",
        "the DataModule's task sampling probabilities (`datamodule.set_sampling_probs`)",
        "A TaskSamplingScheduler applies one rule, and gradbal has no rule that combines two: "
        "keep the one you want (its `floor` and `temperature` pull it towards uniform). For a "
        "fixed start, set the DataModule's `sampling_probs` (`data.init_args.sampling_probs`) "
        "instead of a scheduler with Fixed: the scheduler starts from them.",
    ),
}


def sole_writer(trainer: Trainer, state: str) -> None:
    """Raise if more than one of the trainer's callbacks writes ``state`` (one owner per state).

    A callback that writes a piece of training state names it in a class attribute ``writes``
    (``"task_loss_weights"``, ``"sampling_probs"``). Two such callbacks would silently overwrite
    each other's values at every update, so each calls this in ``setup`` and the first to run
    refuses the set, naming every writer and how to keep one (as
    :func:`~gradbal.callbacks.find_source` refuses two sources of one statistic). Writers of one
    class are also told apart by their settings (``state_key``).
    """
    found = [cb for cb in callbacks_of(trainer) if getattr(cb, "writes", None) == state]
    writers = [type(cb).__name__ for cb in found]
    if len(writers) > 1:
        code, what, how = _WRITTEN_STATE[state]
        listed = ", ".join(writers[:-1]) + " and " + writers[-1]
        both, others = ("both", "other's") if len(writers) == 2 else ("all", "others'")
        settings = ""
        if len(set(writers)) < len(writers):  # same class twice: which is which
            settings = f" Their settings, in order: {'; '.join(cb.state_key for cb in found)}."
        raise RuntimeError(
            f"{code}: {listed} {both} set {what}, so each would silently overwrite the {others} "
            f"values at every update.{settings} Keep only one of {writers} in "
            f"`Trainer(callbacks=[...])` (in YAML: `trainer.callbacks`). {how}"
        )
