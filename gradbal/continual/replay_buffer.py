"""A fixed-size reservoir replay buffer with its own seeded generator and a resumable state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["ReplaySample", "ReservoirBuffer"]


class ReplaySample(NamedTuple):
    """Samples drawn from a :class:`ReservoirBuffer` (copies, on the buffer's device).

    Attributes:
        x: ``[n, *feature_shape]`` inputs.
        y: ``[n]`` long class labels.
        task_ids: ``[n]`` long task index of each sample.
    """

    x: Tensor
    y: Tensor
    task_ids: Tensor


class ReservoirBuffer:
    """Keeps a uniform random subset of everything it was offered (reservoir sampling).

    Vitter's Algorithm R, as the GSA and ER reference code use it: the first ``capacity``
    samples are stored; the ``n``-th one after that (0-based stream index ``n``) replaces a
    uniformly chosen slot with probability ``capacity / (n + 1)``. After ``N`` offers, every
    offered sample is in the buffer with probability ``min(1, capacity / N)``, whatever the task
    order. All randomness (slot choice and :meth:`sample`) comes from one ``torch.Generator``
    seeded with ``seed``, whose state is in :meth:`state_dict`, so a resumed run makes the same
    decisions as an uninterrupted one.

    Args:
        capacity: number of slots, >= 1.
        seed: seeds the buffer's generator.

    Raises:
        ValueError: If ``capacity < 1``.

    Attributes:
        capacity: the number of slots.
        num_seen: how many samples were offered to :meth:`add` so far.

    Example::

        >>> buffer = ReservoirBuffer(capacity=3, seed=0)
        >>> buffer.add(torch.arange(5.0).unsqueeze(1), torch.arange(5), task_ids=0)
        >>> len(buffer), buffer.num_seen
        (3, 5)
        >>> buffer.add(torch.full((2, 1), 9.0), torch.tensor([8, 9]), task_ids=1)
        >>> replay = buffer.sample(10, tasks=[0])  # at most what is there, task 0 only
        >>> bool((replay.task_ids == 0).all()), len(replay.y) <= 3
        (True, True)
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(
                f"ReservoirBuffer: capacity must be >= 1. Got {capacity!r}. For training "
                "without replay, use an objective that does not replay (FineTune)."
            )
        self.capacity = capacity
        self.seed = seed
        self.num_seen = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._x: Tensor | None = None  # [capacity, *feature_shape], allocated on first add
        self._y = torch.zeros(capacity, dtype=torch.long)
        self._task_ids = torch.zeros(capacity, dtype=torch.long)

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def __repr__(self) -> str:
        return f"ReservoirBuffer(capacity={self.capacity}, seed={self.seed})"

    def add(self, x: Tensor, y: Tensor, task_ids: Tensor | int) -> None:
        """Offer a batch, in order; each sample is kept or dropped by the reservoir rule.

        Args:
            x: ``[B, *feature_shape]``, stored detached on the CPU.
            y: ``[B]`` class labels.
            task_ids: ``[B]`` task indices, or one int for the whole batch.

        Raises:
            ValueError: If the shapes disagree with each other or with earlier batches.
        """
        batch = x.shape[0] if x.dim() else -1
        tasks = torch.as_tensor(task_ids, dtype=torch.long).expand(max(batch, 0)).cpu()
        if batch < 0 or y.shape != (batch,):
            raise ValueError(
                f"ReservoirBuffer.add: x must be [B, ...] and y [B]. Got x {tuple(x.shape)} "
                f"and y {tuple(y.shape)}."
            )
        if self._x is None:
            self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
        elif x.shape[1:] != self._x.shape[1:]:
            raise ValueError(
                f"ReservoirBuffer.add: samples have shape {tuple(x.shape[1:])} but the buffer "
                f"holds {tuple(self._x.shape[1:])}. Use one buffer per input shape."
            )
        # Slot for the sample with stream index n: n itself while filling, else a uniform draw
        # from [0, n], kept only if it falls inside the buffer (Algorithm R).
        stream_index = self.num_seen + torch.arange(batch, dtype=torch.float64)
        draws = (
            torch.rand(batch, generator=self._generator, dtype=torch.float64) * (stream_index + 1)
        ).long()
        slots = torch.where(stream_index < self.capacity, stream_index.long(), draws)
        x, y = x.detach().cpu(), y.detach().cpu()
        # In order, so a later sample overwrites an earlier one drawn into the same slot.
        for i in torch.nonzero(slots < self.capacity).flatten().tolist():
            slot = int(slots[i])
            self._x[slot], self._y[slot], self._task_ids[slot] = x[i], y[i], tasks[i]
        self.num_seen += batch

    def sample(self, n: int, *, tasks: Sequence[int] | None = None) -> ReplaySample:
        """Draw up to ``n`` distinct stored samples uniformly (fewer if fewer are stored).

        Args:
            n: how many samples, >= 0.
            tasks: only samples of these task indices (``None``: any task).

        Returns:
            A :class:`ReplaySample`, possibly empty (``[0, *feature_shape]``).
        """
        if n < 0:
            raise ValueError(f"ReservoirBuffer.sample: n must be >= 0. Got {n!r}.")
        stored = torch.arange(len(self))
        if tasks is not None:
            wanted = torch.as_tensor(list(tasks), dtype=torch.long)
            stored = stored[torch.isin(self._task_ids[: len(self)], wanted)]
        # Draw the permutation even when n == 0, so the generator advances the same way.
        chosen = stored[torch.randperm(len(stored), generator=self._generator)[:n]]
        x = self._x[chosen] if self._x is not None else torch.zeros(0)
        return ReplaySample(x=x, y=self._y[chosen], task_ids=self._task_ids[chosen])

    def state_dict(self) -> dict[str, Any]:
        """Plain values and CPU tensors: the stored samples, ``num_seen`` and the generator."""
        size = len(self)
        return {
            "capacity": self.capacity,
            "num_seen": self.num_seen,
            "x": None if self._x is None else self._x[:size].clone(),
            "y": self._y[:size].clone(),
            "task_ids": self._task_ids[:size].clone(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the capacity must match.

        Raises:
            ValueError: If the saved buffer had another capacity.
        """
        if int(state_dict["capacity"]) != self.capacity:
            raise ValueError(
                f"This checkpoint's replay buffer has capacity {state_dict['capacity']}, this "
                f"run's has {self.capacity}. Resume with the same buffer_size."
            )
        self.num_seen = int(state_dict["num_seen"])
        size = len(self)
        x = state_dict.get("x")
        if x is None:
            self._x = None
        else:
            self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self._x[:size] = x
        self._y[:size] = state_dict["y"]
        self._task_ids[:size] = state_dict["task_ids"]
        self._generator.set_state(state_dict["generator"])
