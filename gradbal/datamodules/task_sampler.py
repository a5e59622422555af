"""A seeded, resumable sampler that draws (task, row) pairs with per-task probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def validate_sampling_probs(probs: Sequence[float] | Tensor, task_names: Sequence[str]) -> Tensor:
    """Check per-task sampling probabilities and return them normalised to sum to 1 (float64).

    Raises:
        ValueError: wrong length, a NaN/inf, a negative value, or an all-zero vector.
    """
    values = torch.as_tensor(probs, dtype=torch.float64).flatten().clone()
    received = [round(float(v), 6) for v in values]
    if values.numel() != len(task_names):
        raise ValueError(
            f"sampling_probs must have one value per task: {len(task_names)} tasks "
            f"{list(task_names)}, got {values.numel()} values {received}. "
            "Pass a list in task order or a dict {task_name: prob}."
        )
    tasks = f"tasks {list(task_names)}"
    if not torch.isfinite(values).all():
        raise ValueError(
            f"sampling_probs must be finite, got {received} for {tasks}. Give every task a "
            "finite non-negative weight (they are normalised to sum to 1)."
        )
    if (values < 0).any():
        raise ValueError(
            f"sampling_probs must be non-negative, got {received} for {tasks}. Use 0 for a "
            "task that should never be sampled."
        )
    total = float(values.sum())
    if total == float("inf"):  # finite weights whose sum overflows, e.g. [1e308, 1e308]
        values = values / values.max()
        total = float(values.sum())
    if total <= 0:
        raise ValueError(
            f"sampling_probs must have a positive sum (at least one task must be sampled), "
            f"got {received} for {tasks}. Give at least one task a weight > 0."
        )
    return values / total


class WeightedTaskSampler:
    """Draws batches of ``(task_id, row)`` pairs: the task from a categorical distribution with
    the current sampling probabilities, the row from a per-task shuffled pass over that task's
    rows (every row is seen once before any repeats).

    The sampler owns an explicit ``torch.Generator``; its full state (probabilities, generator,
    each task's pass and position) round-trips through :meth:`state_dict`, so a restored sampler
    continues the very same stream.

    Args:
        task_sizes: number of training rows of each task.
        probs: initial sampling probabilities (normalised here).
        seed: seeds the task draws and every task's shuffles.
        task_names: the tasks' names, for error messages (default ``"0"``, ``"1"``, ...).

    Example::

        >>> s = WeightedTaskSampler([3, 5], probs=[0.5, 0.5], seed=0)
        >>> batch = s.draw(4)
        >>> len(batch), all(0 <= row < [3, 5][task] for task, row in batch)
        (4, True)
    """

    def __init__(
        self,
        task_sizes: Sequence[int],
        probs: Sequence[float] | Tensor,
        seed: int = 0,
        task_names: Sequence[str] | None = None,
    ):
        if not task_sizes or min(task_sizes) <= 0:
            raise ValueError(f"Every task needs at least one row, got sizes {list(task_sizes)}.")
        if task_names is not None and len(task_names) != len(task_sizes):
            raise ValueError(
                f"task_names must name every task: {len(task_sizes)} task sizes, got "
                f"{list(task_names)}."
            )
        self.task_sizes = list(task_sizes)
        self.task_names = (
            [str(i) for i in range(len(task_sizes))] if task_names is None else list(task_names)
        )
        self.seed = seed
        self.probs = validate_sampling_probs(probs, self.task_names)
        self.generator = torch.Generator().manual_seed(seed)
        self._passes = [0] * len(task_sizes)
        self._positions = [0] * len(task_sizes)
        self._perms: dict[int, Tensor] = {}

    def set_probs(self, probs: Sequence[float] | Tensor) -> None:
        """Draw with ``probs`` (validated, normalised) from now on; unchanged on an error."""
        self.probs = validate_sampling_probs(probs, self.task_names)

    def _permutation(self, task: int) -> Tensor:
        perm = self._perms.get(task)
        if perm is None:
            # A derived seed per (task, pass) keeps the state small: no permutation is stored.
            g = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + task * 7_919 + self._passes[task]) % (2**63)
            )
            perm = torch.randperm(self.task_sizes[task], generator=g)
            self._perms[task] = perm
        return perm

    def _next_row(self, task: int) -> int:
        if self._positions[task] >= self.task_sizes[task]:
            self._passes[task] += 1
            self._positions[task] = 0
            self._perms.pop(task, None)
        row = int(self._permutation(task)[self._positions[task]])
        self._positions[task] += 1
        return row

    def draw(
        self, n: int, *, min_per_task: Mapping[int, int] | None = None, slices: int = 1
    ) -> list[tuple[int, int]]:
        """Draw ``n`` ``(task_id, row)`` pairs.

        Args:
            n: Pairs to draw.
            min_per_task: ``{task: m}``: each of the ``slices`` equal consecutive slices (one per
                DDP rank) holds at least ``m`` pairs of ``task``. Each slice is drawn from the
                probabilities as usual, then topped up: while a listed task has fewer than
                ``m``, one slot chosen at random among those of tasks with more than their
                minimum is given to it. Tasks already at their minimum are left as drawn.
            slices: Number of slices; must divide ``n``.

        Raises:
            ValueError: If ``slices`` does not divide ``n`` or the minimums exceed a slice.

        Example::

            >>> s = WeightedTaskSampler([50, 50, 50], probs=[0.98, 0.01, 0.01], seed=0)
            >>> tasks = [t for t, _ in s.draw(8, min_per_task={1: 2, 2: 2}, slices=2)]
            >>> [tasks[:4].count(t) for t in (1, 2)], [tasks[4:].count(t) for t in (1, 2)]
            ([2, 2], [2, 2])
        """
        if not min_per_task:
            tasks = torch.multinomial(self.probs, n, replacement=True, generator=self.generator)
            return [(int(t), self._next_row(int(t))) for t in tasks]
        size = n // slices if slices >= 1 else 0
        if slices < 1 or size * slices != n or sum(min_per_task.values()) > size:
            raise ValueError(
                f"Cannot draw {n} pairs in {slices} slices with at least {dict(min_per_task)} "
                "per task in each slice: the slices must be equal and hold the minimums."
            )
        minimum = torch.zeros(len(self.task_sizes), dtype=torch.long)
        for task, m in min_per_task.items():
            minimum[task] = m
        out: list[tuple[int, int]] = []
        for _ in range(slices):
            drawn = torch.multinomial(self.probs, size, replacement=True, generator=self.generator)
            counts = torch.bincount(drawn, minlength=len(self.task_sizes))
            for task in sorted(min_per_task):
                while counts[task] < minimum[task]:
                    donors = (counts[drawn] > minimum[drawn]).nonzero().flatten()
                    slot = int(donors[torch.randint(len(donors), (1,), generator=self.generator)])
                    counts[drawn[slot]] -= 1
                    drawn[slot] = task
                    counts[task] += 1
            out.extend((int(t), self._next_row(int(t))) for t in drawn)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "probs": [float(p) for p in self.probs],
            "generator": self.generator.get_state(),
            "passes": list(self._passes),
            "positions": list(self._positions),
            "seed": self.seed,
            "task_sizes": list(self.task_sizes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["task_sizes"]) != self.task_sizes:
            raise ValueError(
                f"Cannot restore the task sampler: the checkpoint was made with task sizes "
                f"{state['task_sizes']}, this run has {self.task_sizes}. Resume with the same "
                "task list and datasets, or start a new run."
            )
        saved = torch.as_tensor(state["probs"], dtype=torch.float64).flatten().clone()
        checked = validate_sampling_probs(saved, self.task_names)
        # Saved probabilities are already normalised: keep them bit for bit (normalising again
        # can move a value by one ulp), so a restored sampler draws exactly as the saved one.
        self.probs = saved if torch.allclose(saved, checked, rtol=0, atol=1e-12) else checked
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])
        self._passes = [int(v) for v in state["passes"]]
        self._positions = [int(v) for v in state["positions"]]
        self._perms.clear()
