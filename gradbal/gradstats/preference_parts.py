"""The chosen and rejected parts of a preference gradient, per task, from one captured backward.

In one forward over a preference batch, each pair's chosen and rejected completions are separate
rows. The gradient of the loss is the sum of what flows through the chosen rows (``g_chosen``:
the part that moves ``log pi(y_w)``) and through the rejected rows (``g_rejected``). With one
segment per (task, part), ``segment = 2 * task + is_rejected``, :class:`TaskGradCapture` collects
both parts of every task in the training backward, and the Gram matrix of the segments gives
their norms, their ratio and their cosine. These are the norms of this batch's gradient parts
(not noise-corrected estimates of expected gradients).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["PreferenceGradParts", "preference_grad_parts", "preference_segments"]


class PreferenceGradParts(NamedTuple):
    """Norms of the chosen and rejected gradient parts (float64).

    Attributes:
        chosen: ``[K]`` ``||g_chosen,k||``, per task (NaN for a task absent from the batch).
        rejected: ``[K]`` ``||g_rejected,k||``.
        ratio: ``[K]`` ``rejected / chosen`` (NaN where ``chosen`` is 0 or the task is absent).
        cosine: ``[K]`` cosine between the two parts of each task.
        total_chosen: ``[]`` norm of the chosen part over all tasks, ``||sum_k g_chosen,k||``.
        total_rejected: ``[]`` the same for the rejected part.
        total_ratio: ``[]`` ``total_rejected / total_chosen``.
        total_cosine: ``[]`` cosine between the two total parts.
    """

    chosen: Tensor
    rejected: Tensor
    ratio: Tensor
    cosine: Tensor
    total_chosen: Tensor
    total_rejected: Tensor
    total_ratio: Tensor
    total_cosine: Tensor

    def unweighted(self, weights: Tensor | None) -> PreferenceGradParts:
        """Each task's loss weight divided out of its norms (ratios, cosines and the totals,
        the parts of the gradient actually applied, do not change); ``None``: weights 1."""
        if weights is None:
            return self
        w = weights.to(self.chosen)  # [K]
        inv = torch.where(w > 0, 1 / w, torch.full_like(w, float("nan")))  # [K]
        return self._replace(chosen=self.chosen * inv, rejected=self.rejected * inv)


def preference_segments(task_ids: Tensor, rejected_rows: Tensor, num_tasks: int) -> Tensor:
    """``[N]`` segment of each row: ``2 * task + 1`` for rejected rows, ``2 * task`` for chosen.

    Raises:
        ValueError: If shapes differ or a task id is outside ``[0, num_tasks)``.

    Example::

        >>> preference_segments(torch.tensor([1, 0, 1, 0]), torch.tensor([0, 0, 1, 1]).bool(), 2)
        tensor([2, 0, 3, 1])
    """
    if task_ids.shape != rejected_rows.shape or task_ids.dim() != 1:
        raise ValueError(
            "`task_ids` and `rejected_rows` must both be [N], one entry per forward row. Got "
            f"shapes {tuple(task_ids.shape)} and {tuple(rejected_rows.shape)}."
        )
    if task_ids.numel() and not 0 <= int(task_ids.min()) <= int(task_ids.max()) < num_tasks:
        raise ValueError(
            f"Task ids must be in [0, {num_tasks}). Got values from {int(task_ids.min())} to "
            f"{int(task_ids.max())}."
        )
    return 2 * task_ids.long() + rejected_rows.long()  # [N]


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def preference_grad_parts(gram: Tensor, present: Tensor | None = None) -> PreferenceGradParts:
    """Norms, ratios and cosines of the parts from the ``[2K, 2K]`` Gram of the segments.

    Args:
        gram: ``[2K, 2K]`` inner products of the segments' gradients, segments as in
            :func:`preference_segments` (``TaskGradCapture.gram()``).
        present: ``[K]`` bool, tasks with rows in the batch (others get NaN); ``None``: all.

    Returns:
        A :class:`PreferenceGradParts`.

    Raises:
        ValueError: If ``gram`` is not square with an even size.

    Example::

        >>> g = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # rows: g_chosen, g_rejected of 1 task
        >>> parts = preference_grad_parts(g @ g.T)
        >>> parts.chosen, parts.rejected, parts.ratio
        (tensor([3.], dtype=torch.float64), tensor([1.4142], dtype=torch.float64), tensor([0.4714], dtype=torch.float64))
        >>> parts.cosine
        tensor([0.7071], dtype=torch.float64)
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] % 2:
        raise ValueError(
            f"`gram` must be [2K, 2K] (a chosen and a rejected segment per task). Got shape "
            f"{tuple(gram.shape)}."
        )
    g = gram.double()  # [2K, 2K]
    diagonal = g.diagonal().clamp_min(0)  # [2K] rounding can make tiny squares negative
    chosen, rejected = diagonal[0::2].sqrt(), diagonal[1::2].sqrt()  # [K], [K]
    cross = g[0::2, 1::2].diagonal()  # [K] <g_chosen,k, g_rejected,k>
    if present is not None:
        missing = ~present.to(torch.bool)
        chosen = chosen.masked_fill(missing, float("nan"))
        rejected = rejected.masked_fill(missing, float("nan"))
    total_chosen = g[0::2, 0::2].sum().clamp_min(0).sqrt()  # []
    total_rejected = g[1::2, 1::2].sum().clamp_min(0).sqrt()  # []
    total_cross = g[0::2, 1::2].sum()  # []
    return PreferenceGradParts(
        chosen=chosen,
        rejected=rejected,
        ratio=_ratio(rejected, chosen),
        cosine=_ratio(cross, chosen * rejected),
        total_chosen=total_chosen,
        total_rejected=total_rejected,
        total_ratio=_ratio(total_rejected, total_chosen),
        total_cosine=_ratio(total_cross, total_chosen * total_rejected),
    )
