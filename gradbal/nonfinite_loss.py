"""What a module does with a non-finite loss: skip the step, or stop with a checkpoint.

One NaN or inf loss, backpropagated, turns every weight it touches into NaN, and the gradient
statistics and sampling probabilities computed from them after it. :func:`guard_loss` checks the
loss before Lightning runs the backward. Every rank takes the same decision (one all-reduce of a
flag), so under DDP no rank waits in a backward that another skipped.

Weights that have already diverged (a learning rate far too high) show up first as NaN or
infinite logits when completions are sampled; :func:`nonfinite_logits_error` names that, and
every message ends with :func:`divergence_hint`: the learning rate in use and the reward scale,
the usual causes.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from gradbal.contracts import reported_task_losses, trainer_of

__all__ = [
    "NonFiniteLoss",
    "NonFiniteLossError",
    "divergence_hint",
    "guard_loss",
    "nonfinite_logits_error",
]

#: ``skip``: warn and skip the optimiser step (no backward, nothing changes). ``stop``: raise
#: :class:`NonFiniteLossError`, so the exception checkpoint holds the last good state.
NonFiniteLoss = Literal["skip", "stop"]


class NonFiniteLossError(FloatingPointError):
    """The loss of a training step was NaN or infinite (``on_nonfinite_loss="stop"``), or the
    policy's logits were when sampling completions (its weights have diverged)."""


def learning_rates(module: LightningModule) -> list[float]:
    """The distinct learning rates of the module's optimizers' parameter groups, in order."""
    trainer = trainer_of(module)
    rates: list[float] = []
    for optimizer in getattr(trainer, "optimizers", None) or []:
        for group in optimizer.param_groups:
            lr = float(group.get("lr", float("nan")))
            if lr not in rates:
                rates.append(lr)
    return rates


def divergence_hint(module: LightningModule) -> str:
    """The likely causes of non-finite values, with the module's learning rate and reward scale.

    Example::

        >>> divergence_hint(LightningModule()).split(";")[0]
        'Learning rate too high? (lr=unknown: no optimizer yet)'
    """
    rates = learning_rates(module)
    lr = ", ".join(f"{r:g}" for r in rates) if rates else "unknown: no optimizer yet"
    scale = getattr(module, "scale_rewards", None)
    reward = (
        "rewards enter the advantages unscaled (scale_rewards='none'): keep them within about "
        "[-1, 1] or use scale_rewards: group"
        if scale == "none"
        else "rewards far outside [0, 1] make large losses: rescale the reward"
    )
    return (
        f"Learning rate too high? (lr={lr}); typical values are 1e-6 to 1e-5 for "
        f"billion-parameter models and up to 1e-3 for tiny ones: lower "
        f"model.init_args.optimizer.init_args.lr. Reward scale? {reward}."
    )


def nonfinite_logits_error(module: LightningModule | None, where: str) -> NonFiniteLossError:
    """The error for NaN or infinite logits met while sampling (``where``: what was running).

    Example::

        >>> err = nonfinite_logits_error(None, "sampling completions")
        >>> str(err).split(".")[0]
        "The policy's next-token logits are NaN or infinite while sampling completions"
    """
    trainer = trainer_of(module) if module is not None else None
    step = f" at optimiser step {trainer.global_step}" if trainer is not None else ""
    hint = divergence_hint(module) if module is not None else "Learning rate too high?"
    return NonFiniteLossError(
        f"The policy's next-token logits are NaN or infinite while {where}{step}. Its weights "
        f"have diverged (an earlier optimiser step made them huge or NaN), so no completion can "
        f"be sampled. {hint} Resume from a checkpoint saved before the divergence."
    )


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
    trainer = trainer_of(module)
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
            f"checkpoint holds the last good state. {divergence_hint(module)} Otherwise check "
            "the inputs, or set the module's on_nonfinite_loss='skip' to skip such steps."
        )
    rank_zero_warn(
        f"The training loss is {value} {where}: the step is skipped (no backward, no "
        f"optimiser step; on_nonfinite_loss='skip'). {divergence_hint(module)}",
        category=RuntimeWarning,
    )
    return None


def _bad_tasks(module: LightningModule, trainer: object) -> str:
    task_losses = reported_task_losses(module)
    if task_losses is None:
        return ""
    bad = ~torch.isfinite(task_losses.losses.detach())
    ids = sorted(set(task_losses.task_ids[bad].tolist()))
    names = getattr(getattr(trainer, "datamodule", None), "task_names", None)
    labels = [names[i] if names is not None and i < len(names) else str(i) for i in ids]
    return f", from tasks {labels}" if labels else ""
