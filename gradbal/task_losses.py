"""The one call a LightningModule makes to work with gradbal's callbacks: report per-task losses.

A module hands each sample's share of the loss, with its task, to :func:`report_task_losses` in
``training_step`` and returns what it gives back::

    def training_step(self, batch, batch_idx):
        losses = F.cross_entropy(self(batch["x"]), batch["y"], reduction="none") / len(batch["y"])
        return report_task_losses(self, losses, batch["task_id"])

That sets ``self.task_losses`` (:class:`gradbal.types.TaskLosses`), which the gradient monitor
splits by task, and applies the module's *task loss weights*, which only
:func:`set_task_loss_weights` changes (``TaskLossReweighter`` calls it). The weights live on the
module as the attribute ``task_loss_weights`` (``[K]`` float, or absent: all 1).

A module that multiplies its accumulated gradients by a factor after the backward (GRPO's DAPO
token mean over an accumulation window, :attr:`gradbal.modules.GRPOModule.grad_rescale`)
exposes that factor as the float attribute ``grad_rescale``; the gradient monitors, which see
the gradient before the module's ``on_before_optimizer_step``, read it with
:func:`gradient_rescale`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gradbal.contracts import trainer_of
from gradbal.types import TaskLosses

__all__ = [
    "gradient_rescale",
    "report_task_losses",
    "set_task_loss_weights",
    "task_loss_weights",
]

_ATTRIBUTE = "task_loss_weights"


def report_task_losses(
    module: nn.Module,
    losses: Tensor,
    task_ids: Tensor,
    group_ids: Tensor | None = None,
    *,
    parts: Tensor | None = None,
) -> Tensor:
    """Set ``module.task_losses`` and return the step's loss with the task loss weights applied.

    The returned loss is ``sum_i w[task_ids[i]] * losses[i]`` (``w``: the module's task loss
    weights, all 1 unless :func:`set_task_loss_weights` was called), and ``module.task_losses``
    holds the weighted shares, so ``task_losses.losses.sum()`` is the returned loss.

    Args:
        module: The LightningModule (any ``nn.Module``) whose ``training_step`` this is.
        losses: ``[N]`` float, each sample's additive share of the *unweighted* loss, in the
            autograd graph (for a batch mean: per-sample losses divided by ``N``).
        task_ids: ``[N]`` long, each sample's index into the DataModule's ``task_names``.
        group_ids: ``[N]`` long; samples with equal group id are not independent (the
            completions of one prompt). ``None``: every sample is its own group.
        parts: ``[N]`` long (or bool), a split of the rows a monitor needs beside the tasks:
            for preference losses, 1 on the rejected completions' rows and 0 on the chosen
            ones' (what ``PreferenceGradientMonitor`` reads). ``None``: no split.

    Returns:
        The scalar loss to return from ``training_step``.

    Raises:
        ValueError: If ``losses``, ``task_ids`` and ``group_ids`` are not 1-D of equal length.

    Example::

        >>> module = nn.Linear(1, 1)
        >>> losses, task_ids = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0, 1, 1])
        >>> report_task_losses(module, losses, task_ids)
        tensor(3.5000)
        >>> set_task_loss_weights(module, [2.0, 0.5])
        >>> report_task_losses(module, losses, task_ids), module.task_losses.losses
        (tensor(2.5000), tensor([1.0000, 0.5000, 1.0000]))
    """
    shapes = [tuple(t.shape) for t in (losses, task_ids, group_ids, parts) if t is not None]
    if losses.dim() != 1 or len(set(shapes)) != 1:
        raise ValueError(
            "`losses`, `task_ids`, `group_ids` and `parts` must be 1-D with one entry per "
            f"sample. Got shapes {shapes}. Pass per-sample losses (reduction='none'), not the "
            "reduced loss."
        )
    weights = task_loss_weights(module)
    if weights is not None:
        losses = losses * weights.to(device=losses.device, dtype=losses.dtype)[task_ids]  # [N]
    if group_ids is None:
        group_ids = torch.arange(losses.shape[0], device=task_ids.device)
    trainer = trainer_of(module)
    step = int(trainer.fit_loop.total_batch_idx) if trainer is not None else -1
    module.task_losses = TaskLosses(  # type: ignore[assignment]
        losses, task_ids, group_ids, step, None if parts is None else parts.long()
    )
    return losses.sum()


def set_task_loss_weights(module: nn.Module, weights: Tensor | Sequence[float] | None) -> None:
    """Set the per-task loss weights :func:`report_task_losses` applies from the next step on.

    Args:
        module: The LightningModule.
        weights: ``[K]`` finite non-negative weights in task order, or ``None`` for all 1.
            Stored as float32 on the module's device. gradbal's convention: weights average 1,
            so the loss keeps its scale (``TaskLossReweighter`` follows it).

    Raises:
        ValueError: If ``weights`` is not 1-D, not finite, or has a negative value.

    Example::

        >>> module = nn.Linear(1, 1)
        >>> set_task_loss_weights(module, [1.5, 0.5]); task_loss_weights(module)
        tensor([1.5000, 0.5000])
    """
    if weights is None:
        module.__dict__.pop(_ATTRIBUTE, None)
        return
    values = torch.as_tensor(weights, dtype=torch.float32).detach()
    if values.dim() != 1 or not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(
            f"Task loss weights must be a 1-D vector of finite non-negative values, one per "
            f"task. Got {values.tolist()}."
        )
    device = next(module.parameters(), values).device
    setattr(module, _ATTRIBUTE, values.to(device))


def task_loss_weights(module: nn.Module) -> Tensor | None:
    """The module's current ``[K]`` task loss weights, or ``None`` when none were set (all 1).

    Example::

        >>> task_loss_weights(nn.Linear(1, 1)) is None
        True
    """
    # The one attribute lookup of the contract: a foreign module need not declare it.
    weights = module.__dict__.get(_ATTRIBUTE)
    return weights if isinstance(weights, Tensor) else None


def gradient_rescale(module: nn.Module) -> float:
    """The factor the module applies to its gradients after the backward (1.0 when none).

    Example::

        >>> gradient_rescale(nn.Linear(1, 1))
        1.0
    """
    value = getattr(module, "grad_rescale", 1.0)  # part of the contract, optional
    return float(value) if isinstance(value, int | float) else 1.0
