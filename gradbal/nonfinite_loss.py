"""What a module does with a non-finite loss: skip the step, or stop with a checkpoint.

One NaN or inf loss, backpropagated, turns every weight it touches into NaN, and the gradient
statistics and sampling probabilities computed from them after it. :func:`guard_loss` checks the
loss before Lightning runs the backward. Every rank takes the same decision (one all-reduce of a
flag), so under DDP no rank waits in a backward that another skipped.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

__all__ = ["NonFiniteLoss", "NonFiniteLossError", "guard_loss"]

#: ``skip``: warn and skip the optimiser step (no backward, nothing changes). ``stop``: raise
#: :class:`NonFiniteLossError`, so the exception checkpoint holds the last good state.
NonFiniteLoss = Literal["skip", "stop"]


class NonFiniteLossError(FloatingPointError):
    """The loss of a training step was NaN or infinite (``on_nonfinite_loss="stop"``)."""


def guard_loss(module: LightningModule, loss: Tensor, policy: NonFiniteLoss) -> Tensor | None:
    """``loss`` if it is finite on every rank; else ``None`` (skip) or raise (stop).

    The message names the step and the tasks whose per-sample losses
    (``module.task_losses``) are not finite.

    Example::

        >>> import warnings
        >>> module = LightningModule()
        >>> guard_loss(module, torch.tensor(1.5), "skip")
        tensor(1.5000)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     print(guard_loss(module, torch.tensor(float("nan")), "skip"))
        None
        >>> "skipped" in str(caught[0].message)
        True
    """
    if policy not in ("skip", "stop"):
        raise ValueError(f"on_nonfinite_loss must be 'skip' or 'stop'. Got {policy!r}.")
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    trainer = module._trainer
    if trainer is not None and trainer.world_size > 1:
        bad = trainer.strategy.reduce(bad, reduce_op="sum")
    if float(bad) == 0:
        return loss
    value = float(loss.detach())
    step = trainer.global_step if trainer is not None else 0
    where = f"at optimiser step {step}" + _bad_tasks(module, trainer)
    if policy == "stop":
        raise NonFiniteLossError(
            f"The training loss is {value} {where}. Stopped before the backward, so the "
            "checkpoint holds the last good state. Lower the learning rate, check the rewards "
            "and inputs, or set the module's on_nonfinite_loss='skip' to skip such steps."
        )
    rank_zero_warn(
        f"The training loss is {value} {where}: the step is skipped (no backward, no "
        "optimiser step; on_nonfinite_loss='skip').",
        category=RuntimeWarning,
    )
    return None


def _bad_tasks(module: LightningModule, trainer: object) -> str:
    task_losses = getattr(module, "task_losses", None)
    if task_losses is None:
        return ""
    bad = ~torch.isfinite(task_losses.losses.detach())
    ids = sorted(set(task_losses.task_ids[bad].tolist()))
    names = getattr(getattr(trainer, "datamodule", None), "task_names", None)
    labels = [names[i] if names is not None and i < len(names) else str(i) for i in ids]
    return f", from tasks {labels}" if labels else ""
