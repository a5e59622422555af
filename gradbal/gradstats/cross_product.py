"""Cross-product estimator of each task's squared gradient norm from segment inner products.

Wu et al. 2025 ("Imbalanced Gradients in RL Post-Training of Multi-Task LLMs", arXiv:2510.19178)
track each task's squared gradient norm with a *cross-product* estimator. The naive
``||g_hat||^2`` of a mini-batch mean of ``n`` per-group gradients is biased up:
``E ||g_hat||^2 = ||G||^2 + tr(Cov(g)) / n`` with ``G = E g``, and the variance differs across
tasks. Splitting a task's groups into independent halves A and B (shares ``g_A``, ``g_B``: sums of
``n_A``, ``n_B`` per-group gradients) gives ``E <g_A / n_A, g_B / n_B> = ||G||^2`` exactly.
With one segment per group it is the all-pairs U-statistic
``(||sum_i g_i||^2 - sum_i ||g_i||^2) / (n (n - 1))``. (The paper's exact formula was not seen;
this is the standard construction, see ``/work/shared/research/papers.md`` 1.8.)

Both come from one rule: for task ``k`` with segments ``s`` (``n_s`` groups each),
``unbiased_sq = sum_{s != r} <g_s, g_r> / sum_{s != r} n_s n_r``, each pair having expectation
``n_s n_r ||G||^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class TaskGradStats(NamedTuple):
    """Per-task squared gradient norms, all ``[K]``; NaN where a task lacks the groups.

    Two normalisations. (a) *mean*: the gradient of the task's mean per-group loss, ``G = E g_i``
    (the paper's quantity; ``g_i`` is a group's gradient in the units of ``TaskLosses.losses``, so
    if the module scales every loss by a constant ``c``, divide by ``c**2``). (b) *update*: the
    task's contribution to this step's update, the raw share ``sum_i g_i`` of ``n`` groups, whose
    signal part is ``n**2 ||G||^2``.

    Attributes:
        unbiased_sq: (a) cross-product estimate of ``||G||^2``; may be negative, never clamped.
        naive_sq: (a) ``||sum_i g_i||^2 / n**2``, biased up by ``tr(Cov) / n``.
        norm: Signed square root of ``unbiased_sq`` (``sign(x) * sqrt(|x|)``).
        naive_norm: Square root of ``naive_sq``.
        update_unbiased_sq: (b) ``n**2 * unbiased_sq``: unbiased for ``||E sum_i g_i||^2``.
        update_naive_sq: (b) ``n**2 * naive_sq`` (on one rank: ``||g_A + g_B||^2``).
        num_groups: ``n``, groups of the task (summed over ranks when reduced), float.
        valid: bool, the task had at least one pair of groups in different segments (else
            ``unbiased_sq`` is NaN: no cross-product estimate, never a fake number).
        cross: ``sum_{s != r} <g_s, g_r>`` over the task's pairs of segments (reduced across
            ranks), the numerator of ``unbiased_sq``. To pool several steps, add the steps'
            ``cross`` and ``pairs`` and divide once (``PooledGradNormMonitor``). ``None`` when
            built by hand without it.
        pairs: ``sum_{s != r} n_s n_r``, the denominator (0 where not ``valid``), or ``None``.
    """

    unbiased_sq: Tensor
    naive_sq: Tensor
    norm: Tensor
    naive_norm: Tensor
    update_unbiased_sq: Tensor
    update_naive_sq: Tensor
    num_groups: Tensor
    valid: Tensor
    cross: Tensor | None = None
    pairs: Tensor | None = None

    def unweighted(self, weights: Tensor | None) -> TaskGradStats:
        """The statistics of the unweighted task losses: ``||w_k G_k||^2 / w_k^2`` per task.

        ``weights``: ``[K]`` loss weights the shares were measured with (``None``: 1). A task
        whose weight is 0, or whose estimate is not finite (fp16 overflow), becomes invalid
        (``unbiased_sq`` NaN).

        Example::

            >>> s = task_grad_stats(torch.tensor([[4.0, 2.0], [2.0, 4.0]]), torch.tensor([1, 1]),
            ...                     num_tasks=1)
            >>> s.unbiased_sq, s.unweighted(torch.tensor([2.0])).unbiased_sq
            (tensor([2.]), tensor([0.5000]))
        """
        stats = self
        if weights is not None:
            w_sq = weights.to(stats.unbiased_sq) ** 2  # [K]
            inv = torch.where(w_sq > 0, 1 / w_sq, torch.full_like(w_sq, float("nan")))
            stats = TaskGradStats(
                unbiased_sq=stats.unbiased_sq * inv,
                naive_sq=stats.naive_sq * inv,
                norm=stats.norm * inv.sqrt(),
                naive_norm=stats.naive_norm * inv.sqrt(),
                update_unbiased_sq=stats.update_unbiased_sq * inv,
                update_naive_sq=stats.update_naive_sq * inv,
                num_groups=stats.num_groups,
                valid=stats.valid,
                cross=None if stats.cross is None else stats.cross * inv,
                pairs=stats.pairs,
            )
        valid = stats.valid & torch.isfinite(stats.unbiased_sq)
        return stats._replace(
            valid=valid, unbiased_sq=torch.where(valid, stats.unbiased_sq, float("nan"))
        )


def task_grad_stats(
    gram: Tensor,
    groups_per_segment: Tensor,
    *,
    segment_tasks: Tensor | None = None,
    num_tasks: int | None = None,
    all_reduce: Callable[[Tensor], Tensor] | None = None,
) -> TaskGradStats:
    """Estimate each task's squared gradient norm from the segments' Gram matrix.

    Args:
        gram: ``[S, S]`` inner products of the segments' gradient shares (shares are sums over
            the segment's rows), e.g. ``TaskGradCapture.gram()``.
        groups_per_segment: ``[S]`` groups in each segment.
        segment_tasks: ``[S]`` long, task of each segment. ``None``: the half layout of
            ``half_split_segments``, segment ``2 * task + half``.
        num_tasks: ``K``; default ``S // 2`` for halves, else ``max(segment_tasks) + 1``.
        all_reduce: Sums a tensor over data-parallel ranks (e.g.
            ``lambda t: trainer.strategy.reduce(t, reduce_op="sum")``). Every rank passes its
            local Gram and counts with the same segment layout; one call reduces the cross sums,
            pair counts, squared share norms and group counts. Shares are rank-local, so only
            within-rank pairs count: ``unbiased_sq = sum_ranks cross / sum_ranks pairs`` is still
            unbiased for ``||G||^2`` of the per-group gradient (pooled over all ranks' groups),
            and ``update_unbiased_sq`` refers to the SUM over ranks of the task's shares (divide
            by ``world_size**2`` for DDP's averaged gradient). Per-rank means are never averaged.

    Returns:
        ``TaskGradStats`` of ``[K]`` tensors in ``gram``'s dtype (at least fp32).

    Example::

        >>> g = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # one task: shares of halves A, B (1 group each)
        >>> stats = task_grad_stats(g @ g.T, torch.tensor([1, 1]))
        >>> stats.unbiased_sq, stats.naive_sq, stats.update_naive_sq  # <gA,gB>, ||gA+gB||^2/4, ||gA+gB||^2
        (tensor([2.]), tensor([2.5000]), tensor([10.]))
    """
    size = gram.shape[0]
    if gram.shape != (size, size) or groups_per_segment.shape != (size,):
        raise ValueError(
            f"`gram` must be [S, S] and `groups_per_segment` [S]. Got {tuple(gram.shape)} and "
            f"{tuple(groups_per_segment.shape)}."
        )
    if segment_tasks is None:
        if size % 2:
            raise ValueError(
                f"The half layout needs an even number of segments (2 per task). Got {size}. "
                "Pass `segment_tasks` for other layouts."
            )
        segment_tasks = torch.arange(size, device=gram.device) // 2
    dtype = torch.promote_types(gram.dtype, torch.float32)
    if num_tasks is None:
        num_tasks = int(segment_tasks.max()) + 1 if size else 0
    member = torch.nn.functional.one_hot(segment_tasks.to(gram.device), num_tasks).to(
        dtype
    )  # [S, K]
    gram = gram.to(dtype)
    n = groups_per_segment.to(device=gram.device, dtype=dtype)  # [S]
    total_sq = ((gram @ member) * member).sum(0)  # [K] ||sum_s g_s||^2
    cross = total_sq - member.T @ gram.diagonal()  # [K] sum_{s != r} <g_s, g_r>
    n_task = member.T @ n  # [K]
    pairs = n_task**2 - member.T @ n**2  # [K] sum_{s != r} n_s n_r
    sums = torch.stack([cross, pairs, total_sq, n_task**2, n_task])  # [5, K]
    if all_reduce is not None:
        sums = all_reduce(sums)
    cross, pairs, total_sq, n_sq, n_task = sums.unbind(0)
    nan = torch.full_like(cross, float("nan"))
    valid = pairs > 0
    unbiased_sq = torch.where(valid, cross / pairs.clamp_min(1), nan)
    naive_sq = torch.where(n_sq > 0, total_sq / n_sq.clamp_min(1), nan)
    return TaskGradStats(
        unbiased_sq=unbiased_sq,
        naive_sq=naive_sq,
        norm=unbiased_sq.sign() * unbiased_sq.abs().sqrt(),
        naive_norm=naive_sq.sqrt(),
        update_unbiased_sq=n_task**2 * unbiased_sq,
        update_naive_sq=n_task**2 * naive_sq,
        num_groups=n_task,
        valid=valid,
        cross=cross,
        pairs=pairs,
    )
