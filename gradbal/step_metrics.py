"""Logging values that exist only on some steps (per-task metrics) without stale repeats.

Lightning's logger connector writes, at every logging step, the last value of every step metric
ever logged, so a task absent from a batch would get its previous value written again. Here the
values go to ``trainer.callback_metrics`` (progress bar, callbacks) through ``module.log`` with
``logger=False``, and to the loggers directly, only on the steps that produced them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from lightning.pytorch import LightningModule
from torch import Tensor

from gradbal.contracts import trainer_of


def log_step_metrics(
    module: LightningModule,
    metrics: Mapping[str, float | Tensor],
    *,
    prog_bar: Collection[str] = (),
    every_n_steps: int | None = None,
) -> None:
    """Log ``metrics`` for this optimiser step only (values already reduced across ranks).

    Args:
        module: the LightningModule (call from ``training_step`` or a callback hook).
        metrics: name -> scalar.
        prog_bar: names also shown in the progress bar.
        every_n_steps: write to the loggers every n steps (default: the trainer's
            ``log_every_n_steps``); ``1`` writes whenever called.
    """
    for name, value in metrics.items():
        module.log(
            name, value, on_step=True, on_epoch=False, logger=False, prog_bar=name in prog_bar
        )
    trainer = trainer_of(module)
    if trainer is None or not trainer.loggers or not metrics:
        return
    # set by Lightning's logger connector at Trainer init, not declared on the class
    n = every_n_steps or int(getattr(trainer, "log_every_n_steps", 50))
    if (trainer.global_step + 1) % n != 0:
        return
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)
