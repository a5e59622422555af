"""Sums over data-parallel ranks for the GRPO loss: token counts and the batch reward std."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from gradbal.contracts import trainer_of


def reduce_sum(module: LightningModule, value: Tensor) -> Tensor:
    """``value`` summed over every rank (itself on one process); every rank must call it."""
    trainer = trainer_of(module)
    if trainer is not None and trainer.world_size > 1:
        return trainer.strategy.reduce(value.clone(), reduce_op="sum")
    return value


def global_std(module: LightningModule, values: Tensor) -> Tensor | None:
    """Unbiased (``n - 1``) std of the values of every rank; ``None`` on one process (the
    caller's local std is the global one) or with fewer than 2 values in all.

    Two small all-reduces (count and sum, then squared deviations from the global mean) in
    float64: the same number as ``torch.cat(all ranks' values).std()`` without gathering them.
    """
    trainer = trainer_of(module)
    if trainer is None or trainer.world_size == 1:
        return None
    v = values.detach().double().reshape(-1)  # [n_r]
    count_sum = reduce_sum(module, torch.stack([v.new_tensor(float(v.numel())), v.sum()]))  # [2]
    count, total = count_sum[0], count_sum[1]
    if float(count) < 2:
        return None
    squares = reduce_sum(module, ((v - total / count) ** 2).sum())  # []
    return (squares / (count - 1)).sqrt().to(values.dtype)
