"""Distinct completions per group, and a warning when a task's groups stop varying.

GRPO learns only from the differences between a group's completions: a group of identical
completions has identical rewards and zero advantages. Sampling settings that make every
completion the same (a near-zero temperature, a collapsed policy) therefore stop learning
without any error; ``train/distinct_frac/<task>`` and :class:`IdenticalGroupsWatch` show it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


def distinct_fraction(completion_ids: Tensor, mask: Tensor, group_size: int) -> Tensor:
    """Distinct completions of each group over the group size: ``[B]`` in ``[1/G, 1]``.

    Completions compare by their counted tokens (``mask``, up to and including the first eos);
    what follows is ignored. ``1/G``: all ``G`` completions of the group are identical;
    ``1``: all differ.

    Args:
        completion_ids: ``[B*G, C]`` token ids, rows grouped by prompt.
        mask: ``[B*G, C]`` bool, the tokens that count.
        group_size: ``G``.

    Example::

        >>> ids = torch.tensor([[5, 1], [5, 1], [5, 2], [7, 0], [7, 9], [7, 0]])
        >>> mask = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0], [1, 0], [1, 0]]).bool()
        >>> distinct_fraction(ids, mask, group_size=3)  # "5 1" twice + "5 2"; "7" three times
        tensor([0.6667, 0.3333])
    """
    n, c = completion_ids.shape
    g = group_size
    ids = completion_ids.masked_fill(~mask, -1).view(n // g, g, c)  # [B, G, C]
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).all(dim=-1)  # [B, G, G]
    earlier = torch.ones(g, g, dtype=torch.bool, device=ids.device).tril(diagonal=-1)  # [G, G]
    repeated = (same & earlier).any(dim=-1)  # [B, G] equals an earlier completion
    return (~repeated).sum(dim=-1).float() / g  # [B]


class IdenticalGroupsWatch:
    """Warns when every group of a task has had identical completions for ``patience`` steps.

    Steps where a task has no group do not count either way. The warning comes once per run of
    identical steps (again only after a step with some variety). It observes only: it changes
    nothing in training, so it holds no checkpointed state.

    Args:
        task_names: the task names, in task-id order.
        patience: consecutive steps of identical groups before warning; ``None`` never warns.

    Example::

        >>> import warnings
        >>> watch = IdenticalGroupsWatch(["add"], patience=2)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     for _ in range(3):
        ...         _ = watch.update(torch.tensor([0.25]), torch.tensor([0]), group_size=4)
        >>> len(caught), watch.streaks
        (1, {'add': 3})
    """

    def __init__(self, task_names: Sequence[str], patience: int | None) -> None:
        if patience is not None and patience < 1:
            raise ValueError(
                f"identical_groups_patience must be >= 1 (steps) or null (never warn). "
                f"Got {patience!r}."
            )
        self.task_names = list(task_names)
        self.patience = patience
        self.streaks = dict.fromkeys(self.task_names, 0)

    def update(self, distinct: Tensor, group_task_ids: Tensor, group_size: int) -> list[str]:
        """Count this step's groups (``distinct`` ``[B]``, their task ids ``[B]``); warn.

        Returns:
            The tasks warned about at this step.
        """
        identical = distinct.detach().cpu() * group_size <= 1.5  # [B] one distinct completion
        task_ids = group_task_ids.detach().cpu()
        warned = []
        for t in sorted(set(task_ids.tolist())):
            name = self.task_names[t]
            all_same = bool(identical[task_ids == t].all())
            self.streaks[name] = self.streaks[name] + 1 if all_same else 0
            if self.patience is not None and self.streaks[name] == self.patience:
                warned.append(name)
                rank_zero_warn(
                    f"Task {name!r}: every group's {group_size} completions have been identical "
                    f"for {self.patience} consecutive steps (train/distinct_frac/{name} = "
                    f"{1 / group_size:.3g}), so their advantages are 0 and GRPO learns nothing "
                    f"from this task. If this starts early, sampling is degenerate: raise "
                    f"temperature (e.g. 1.0), top_p (1.0) or top_k (null). If the task is "
                    f"solved, this is expected (set identical_groups_patience: null to silence).",
                    category=RuntimeWarning,
                )
        return warned
