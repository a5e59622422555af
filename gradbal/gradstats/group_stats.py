"""Per-group summaries of a GRPO rollout: the units the rollout statistics pool (torch only)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class GroupSummary(NamedTuple):
    """One entry per group (the completions of one prompt), all ``[U]``.

    Attributes:
        task_ids: long, the group's task.
        size: float, completions in the group (``G``).
        reward_mean: The group's mean reward (its success rate ``p`` for binary rewards).
        reward_var: The within-group reward variance, ``mean_i (r_i - mean r)^2`` (the
            population variance: ``p (1 - p)`` for binary rewards).
        abs_advantage_sum: ``sum_i |A_i|`` over the group.
        informative: bool, the group's rewards are not all equal, so its advantages are not
            all 0 (with any advantage scaling) and it carries a policy gradient.
    """

    task_ids: Tensor
    size: Tensor
    reward_mean: Tensor
    reward_var: Tensor
    abs_advantage_sum: Tensor
    informative: Tensor


def group_totals(
    values: Tensor, task_ids: Tensor, group_ids: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(task_ids [U], size [U], total [U])``: each group's task, rows and sum of ``values``.

    Raises:
        ValueError: If a group holds rows of two tasks.

    Example::

        >>> group_totals(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1, 1, 0]), torch.tensor([5, 5, 7]))
        (tensor([1, 0]), tensor([2., 1.]), tensor([3., 4.]))
    """
    groups, inverse = torch.unique(group_ids, return_inverse=True)  # [U], [N]
    u = groups.numel()
    dtype = torch.promote_types(values.dtype, torch.float32)
    task = torch.zeros(u, dtype=torch.long, device=task_ids.device).scatter_(0, inverse, task_ids)
    if (task[inverse] != task_ids).any():
        raise ValueError(
            "A group holds rows of different tasks (group_ids must be unique per prompt). "
            f"Got task_ids {task_ids.tolist()} for group_ids {group_ids.tolist()}."
        )
    size = torch.zeros(u, dtype=dtype, device=values.device).index_add_(
        0, inverse, torch.ones_like(values, dtype=dtype)
    )
    total = torch.zeros(u, dtype=dtype, device=values.device).index_add_(
        0, inverse, values.to(dtype)
    )
    return task, size, total


def group_summary(
    rewards: Tensor, advantages: Tensor, task_ids: Tensor, group_ids: Tensor
) -> GroupSummary:
    """Summarise each group of a rollout (any order of rows; groups need not be contiguous).

    Args:
        rewards: ``[N]`` each completion's reward.
        advantages: ``[N]`` each completion's advantage.
        task_ids: ``[N]`` long, each completion's task.
        group_ids: ``[N]`` long, equal for the completions of one prompt.

    Raises:
        ValueError: If the shapes differ, or a group holds rows of two tasks.

    Example::

        >>> s = group_summary(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.5, -0.5, 0.0, 0.0]),
        ...                   torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]))
        >>> s.reward_var, s.informative
        (tensor([0.2500, 0.0000]), tensor([ True, False]))
    """
    if not rewards.shape == advantages.shape == task_ids.shape == group_ids.shape:
        raise ValueError(
            f"rewards, advantages, task_ids and group_ids must have one shape [N]. Got "
            f"{tuple(rewards.shape)}, {tuple(advantages.shape)}, {tuple(task_ids.shape)}, "
            f"{tuple(group_ids.shape)}."
        )
    groups, inverse = torch.unique(group_ids, return_inverse=True)  # [U], [N]
    u = groups.numel()
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    rewards = rewards.to(dtype)

    def total(values: Tensor) -> Tensor:  # [U]
        return torch.zeros(u, dtype=dtype, device=values.device).index_add_(0, inverse, values)

    size = total(torch.ones_like(rewards))
    mean = total(rewards) / size
    var = total((rewards - mean[inverse]) ** 2) / size
    low = torch.full((u,), float("inf"), dtype=dtype, device=rewards.device)
    high = torch.full((u,), float("-inf"), dtype=dtype, device=rewards.device)
    low = low.scatter_reduce(0, inverse, rewards, reduce="amin")
    high = high.scatter_reduce(0, inverse, rewards, reduce="amax")
    task, _, _ = group_totals(rewards, task_ids, group_ids)  # checks one task per group
    return GroupSummary(
        task_ids=task,
        size=size,
        reward_mean=mean,
        reward_var=var,
        abs_advantage_sum=total(advantages.to(dtype).abs()),
        informative=high > low,
    )
