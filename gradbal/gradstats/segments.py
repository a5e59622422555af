"""Map each batch row to a *segment*: the unit whose share of the gradient is captured.

A segment is a set of whole groups of one task. The two layouts the estimators use:

* halves (:func:`half_split_segments`): segment ``2 * task + half``, each task's groups split at
  random into halves A (``half = 0``) and B (``half = 1``), for the cross-product estimator;
* one segment per group (:func:`group_segments`), for the all-pairs estimator.

Rows with segment ``-1`` are ignored. Groups are never split: the completions of one GRPO prompt
share an advantage baseline, so only whole groups are independent draws from the task.
"""

from __future__ import annotations

import torch
from torch import Tensor


def half_split_segments(
    task_ids: Tensor, group_ids: Tensor, num_tasks: int, *, generator: torch.Generator | None
) -> Tensor:
    """Split each task's groups into two random halves; return segment ``2 * task + half`` per row.

    A task with ``n`` groups gets ``n // 2`` in half A and the rest in half B, so a task with a
    single group has an empty half A (the estimators report NaN for it).

    Args:
        task_ids: ``[N]`` long, task of each row, in ``[0, num_tasks)``.
        group_ids: ``[N]`` long, group of each row (rows of one group share one task).
        num_tasks: Number of tasks ``K``; segments are in ``[0, 2K)``.
        generator: Seeded generator for the split (on ``task_ids``' device), or ``None`` for the
            global one.

    Returns:
        ``[N]`` long segment ids.

    Raises:
        ValueError: If shapes differ, a task id is out of range, or a group spans two tasks.

    Example::

        >>> task_ids = torch.tensor([0, 0, 0, 0, 1, 1])
        >>> group_ids = torch.tensor([7, 7, 8, 8, 9, 9])  # task 0 has two groups of 2 rows
        >>> seg = half_split_segments(task_ids, group_ids, 2, generator=torch.Generator().manual_seed(0))
        >>> sorted(seg[:4].tolist()), seg[4:].tolist()  # one group per half; task 1: half B only
        ([0, 0, 1, 1], [3, 3])
    """
    group_index, group_task = _group_tasks(task_ids, group_ids, num_tasks)
    num_groups = group_task.shape[0]
    keys = torch.rand(num_groups, generator=generator, device=task_ids.device)  # [G]
    order = torch.argsort(keys)
    order = order[torch.argsort(group_task[order], stable=True)]  # [G] by task, random within
    per_task = torch.bincount(group_task, minlength=num_tasks)  # [K]
    starts = torch.cumsum(per_task, 0) - per_task  # [K]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_groups, device=order.device)
    rank = rank - starts[group_task]  # [G] position within its task
    half = (rank >= per_task[group_task] // 2).long()  # [G]
    return (2 * group_task + half)[group_index]  # [N]


def group_segments(task_ids: Tensor, group_ids: Tensor, num_tasks: int) -> tuple[Tensor, Tensor]:
    """Give every group its own segment (for the all-pairs estimator).

    Args:
        task_ids: ``[N]`` long, task of each row, in ``[0, num_tasks)``.
        group_ids: ``[N]`` long, group of each row.
        num_tasks: Number of tasks.

    Returns:
        ``(segments [N], segment_tasks [M])``: segment of each row (groups numbered in sorted
        group-id order) and the task of each of the ``M`` segments.

    Example::

        >>> group_segments(torch.tensor([1, 1, 0]), torch.tensor([5, 5, 2]), 2)
        (tensor([1, 1, 0]), tensor([0, 1]))
    """
    return _group_tasks(task_ids, group_ids, num_tasks)


def count_groups_per_segment(segments: Tensor, group_ids: Tensor, num_segments: int) -> Tensor:
    """Count the distinct groups in each segment (rows with segment ``-1`` are ignored).

    Raises:
        ValueError: If a group has rows in two segments (it would not be an independent draw).

    Example::

        >>> count_groups_per_segment(torch.tensor([0, 0, 1, -1]), torch.tensor([3, 3, 4, 5]), 2)
        tensor([1, 1])
    """
    kept = segments >= 0
    pairs = torch.unique(torch.stack([group_ids[kept], segments[kept]]), dim=1)  # [2, P]
    if pairs.shape[1] != torch.unique(pairs[0]).numel():
        raise ValueError(
            "A group has rows in two segments. Split by whole groups (e.g. with "
            "`half_split_segments`) so that each segment's groups are independent draws."
        )
    return torch.bincount(pairs[1], minlength=num_segments)


def group_segment_ids(segments: Tensor, group_ids: Tensor) -> Tensor:
    """The segment of each group ``[G]``, groups in ascending id order (``-1``: left out).

    Every row of a group is in one segment (:func:`count_groups_per_segment` checks it); a group
    whose rows are all ``-1`` is ``-1``.

    Example::

        >>> group_segment_ids(torch.tensor([1, 1, 0, -1]), torch.tensor([7, 7, 2, 9]))
        tensor([ 0,  1, -1])
    """
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    out = torch.full((uniq.shape[0],), -1, dtype=segments.dtype, device=segments.device)
    return out.scatter_reduce(0, inverse, segments, reduce="amax")


def _group_tasks(task_ids: Tensor, group_ids: Tensor, num_tasks: int) -> tuple[Tensor, Tensor]:
    """Return ``(group index of each row [N], task of each group [G])``, validated."""
    if task_ids.shape != group_ids.shape or task_ids.dim() != 1:
        raise ValueError(
            "`task_ids` and `group_ids` must both be [N]. Got shapes "
            f"{tuple(task_ids.shape)} and {tuple(group_ids.shape)}."
        )
    if task_ids.numel() and not 0 <= int(task_ids.min()) <= int(task_ids.max()) < num_tasks:
        raise ValueError(
            f"Task ids must be in [0, {num_tasks}). Got values from {int(task_ids.min())} to "
            f"{int(task_ids.max())}. Pass `num_tasks` = the number of tasks."
        )
    _, group_index = torch.unique(group_ids, return_inverse=True)  # [N]
    num_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    lowest = torch.full((num_groups,), num_tasks, dtype=torch.long, device=task_ids.device)
    highest = torch.full((num_groups,), -1, dtype=torch.long, device=task_ids.device)
    lowest = lowest.scatter_reduce(0, group_index, task_ids, "amin")  # [G]
    highest = highest.scatter_reduce(0, group_index, task_ids, "amax")  # [G]
    if not torch.equal(lowest, highest):
        raise ValueError(
            "A group spans two tasks: rows with equal `group_ids` must have equal `task_ids`. "
            "Number groups per prompt (e.g. prompt index), not per task."
        )
    return group_index, lowest
