"""CheckpointConfig: the run's config in every checkpoint, and an explicit learning rate on resume."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from gradbal.callbacks._prerequisites import datamodule_of

__all__ = ["CheckpointConfig", "ResumeLR", "ResumeLRError"]

#: ``ask``: stop with :class:`ResumeLRError` when the learning rate changed; ``checkpoint``: keep
#: the checkpoint's (Lightning's behaviour: the optimiser state carries it); ``config``: apply the
#: new one.
ResumeLR = Literal["ask", "checkpoint", "config"]

#: Key of this callback's record in a checkpoint.
CHECKPOINT_KEY = "gradbal"


class ResumeLRError(ValueError):
    """A resume changed the learning rate and ``resume_lr`` did not say which one to use."""


class CheckpointConfig(Callback):
    """Saves the resolved config in each checkpoint and settles a changed learning rate on resume.

    ``checkpoint["gradbal"]`` gets ``{"config": config, "run_id": run_id, "task_names": [...]}``;
    ``gradbal fit`` compares it with the new config when it resumes and prints what differs.

    A restored optimiser keeps the learning rate it was saved with, so a new ``lr`` in the
    config would silently do nothing. On resume this callback compares, per parameter group,
    the base learning rate the new config builds (``initial_lr`` when a scheduler set one, else
    ``lr``, read at ``on_fit_start`` before Lightning restores the optimiser) with the restored
    one. When they differ, ``resume_lr`` decides:

    * ``ask`` (default): raise :class:`ResumeLRError` naming both values, before any step;
    * ``checkpoint``: keep the checkpoint's, with a warning;
    * ``config``: apply the new one, with a warning. Every group's ``lr`` and ``initial_lr`` and
      each scheduler's ``base_lrs`` are multiplied by ``new / restored``, so a schedule keeps
      its position and shape at the new scale.

    ``gradbal fit`` adds one (``--resume_lr`` sets the choice) unless the config has one.

    Args:
        config: The resolved config (plain values) to store.
        run_id: The run's id (its checkpoint directory's name).
        resume_lr: What to do with a changed learning rate on resume.
        fresh_command: Printed in the error as the way to start over instead.

    Example::

        >>> CheckpointConfig(resume_lr="config").resume_lr
        'config'
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        run_id: str | None = None,
        resume_lr: ResumeLR = "ask",
        fresh_command: str | None = None,
    ) -> None:
        if resume_lr not in ("ask", "checkpoint", "config"):
            raise ValueError(
                f"resume_lr must be 'ask', 'checkpoint' or 'config', got {resume_lr!r}. "
                "'checkpoint' keeps the restored learning rate, 'config' applies the new one."
            )
        self.config = config
        self.run_id = run_id
        self.resume_lr = resume_lr
        self.fresh_command = fresh_command
        self._fresh_lrs: list[list[float]] = []

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        names = getattr(datamodule_of(trainer), "task_names", None)
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.config,
            "run_id": self.run_id,
            "task_names": list(names) if names is not None else None,
        }

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fresh_lrs = [_base_lrs(optimizer) for optimizer in trainer.optimizers]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        for index, optimizer in enumerate(trainer.optimizers):
            fresh = self._fresh_lrs[index] if index < len(self._fresh_lrs) else []
            restored = _base_lrs(optimizer)
            if len(fresh) != len(restored) or all(
                abs(a - b) <= 1e-12 * max(abs(a), abs(b))
                for a, b in zip(fresh, restored, strict=True)
            ):
                continue
            both = f"the checkpoint has lr {_show(restored)}, the config {_show(fresh)}"
            if self.resume_lr == "ask":
                fresh_hint = f" Or start over: {self.fresh_command}" if self.fresh_command else ""
                raise ResumeLRError(
                    f"Resuming {trainer.ckpt_path} with a different learning rate: {both} "
                    f"(optimizer {index}). Say which to use: --resume_lr=checkpoint keeps "
                    f"{_show(restored)}, --resume_lr=config applies {_show(fresh)}.{fresh_hint}"
                )
            if self.resume_lr == "checkpoint":
                rank_zero_warn(f"Resume: {both}; keeping the checkpoint's (resume_lr=checkpoint).")
                continue
            rank_zero_warn(f"Resume: {both}; applying the config's (resume_lr=config).")
            for group, new, old in zip(optimizer.param_groups, fresh, restored, strict=True):
                ratio = new / old if old else None
                group["lr"] = group["lr"] * ratio if ratio is not None else new
                if "initial_lr" in group:
                    group["initial_lr"] = new
            for config in trainer.lr_scheduler_configs:
                scheduler = config.scheduler
                if getattr(scheduler, "optimizer", None) is optimizer and hasattr(
                    scheduler, "base_lrs"
                ):
                    scheduler.base_lrs = list(_base_lrs(optimizer))
                    if hasattr(scheduler, "_last_lr"):
                        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def _base_lrs(optimizer: Any) -> list[float]:
    return [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]


def _show(values: list[float]) -> str:
    return (
        f"{values[0]:g}"
        if len(set(values)) == 1
        else "[" + ", ".join(f"{v:g}" for v in values) + "]"
    )
