"""``TaskMixtureSampler``: a torch ``Sampler`` that lets a plain DataModule change its task mixture
while an epoch runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from gradbal.datamodules.task_sampler import WeightedTaskSampler


class TaskMixtureSampler(Sampler[int]):
    """Draw dataset indices task by task with probabilities that can change mid-epoch.

    For your own LightningDataModule over a map-style dataset whose rows each belong to a task:
    pass it as the training ``DataLoader``'s ``sampler`` and forward ``sampling_probs`` /
    ``set_sampling_probs`` to it, and ``TaskSamplingScheduler`` changes the mixture of the
    batches drawn after each update, not only from the next epoch (a sampler that lists an
    epoch's indices up front, such as ``WeightedRandomSampler``, only changes at the next
    epoch). Each index picks a task with the current probabilities, then the next row of that
    task's shuffled pass (every row of a task is seen once before any repeats), from a seeded
    generator.

    The change reaches the batches the ``DataLoader`` fetches after the call: with
    ``num_workers=0`` the next batch, with workers ``prefetch_factor * num_workers`` batches
    later (those were fetched ahead).

    Under DDP, pass ``rank`` and ``world_size`` (``trainer.global_rank`` / ``world_size``, known
    in ``setup``) and ``Trainer(use_distributed_sampler=False)``: every rank draws the same
    global stream, ``world_size`` indices per draw, and keeps its own; Lightning's own
    distributed wrapper would list the whole epoch at its start, freezing the mixture.

    Resume: :meth:`state_dict` holds the probabilities, generator and each task's pass; save it in
    your DataModule's ``state_dict`` and restore it in ``load_state_dict``. A run resumed
    mid-epoch continues from the sampler's state at the checkpoint: the indices of the batches the
    ``DataLoader`` had fetched ahead are not replayed. (``MultiTaskDataModule`` replays them and
    resumes bit for bit.)

    Args:
        task_ids: ``[len(dataset)]``: each row's task, an index into ``task_names``.
        task_names: The tasks; every task needs at least one row.
        sampling_probs: One value per task (list in task order, or ``{name: value}``),
            normalised; ``None``: uniform.
        num_samples: Indices per epoch on this rank; default ``len(task_ids) // world_size``.
        seed: Seeds the draws.
        rank: This process's rank.
        world_size: Number of processes.

    Raises:
        ValueError: A task id outside ``task_names``, a task without rows, bad probabilities,
            or a rank outside ``[0, world_size)``.

    Example::

        >>> sampler = TaskMixtureSampler([0, 0, 1, 1, 1], ["a", "b"], sampling_probs=[1, 0])
        >>> sorted({i for i in sampler})  # rows of task "a" only
        [0, 1]
        >>> sampler.set_sampling_probs({"a": 0, "b": 1}); sorted({i for i in sampler})
        [2, 3, 4]
    """

    def __init__(
        self,
        task_ids: Sequence[int] | Tensor,
        task_names: Sequence[str],
        sampling_probs: Sequence[float] | Mapping[str, float] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        ids = torch.as_tensor(task_ids, dtype=torch.long).flatten()
        self.task_names = list(task_names)
        k = len(self.task_names)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
            raise ValueError(
                f"task_ids must index task_names ({k} tasks {self.task_names}); got values from "
                f"{int(ids.min())} to {int(ids.max())}."
            )
        self._rows = [(ids == t).nonzero().flatten().tolist() for t in range(k)]
        empty = [self.task_names[t] for t, rows in enumerate(self._rows) if not rows]
        if empty:
            raise ValueError(
                f"Tasks {empty} have no rows in task_ids. Drop them from task_names, or add "
                "their rows to the dataset."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        self.rank, self.world_size = rank, world_size
        self.num_samples = num_samples if num_samples is not None else ids.numel() // world_size
        if self.num_samples < 1:
            raise ValueError(
                f"num_samples must be >= 1, got {self.num_samples} ({ids.numel()} rows over "
                f"{world_size} processes)."
            )
        self._sampler = WeightedTaskSampler(
            [len(rows) for rows in self._rows],
            self._in_task_order(sampling_probs),
            seed=seed,
            task_names=self.task_names,
        )

    def _in_task_order(
        self, probs: Sequence[float] | Mapping[str, float] | Tensor | None
    ) -> Sequence[float] | Tensor:
        """``probs`` in task order (``None``: uniform); the sampler validates and normalises."""
        if probs is None:
            return torch.full((len(self.task_names),), 1.0 / len(self.task_names))
        if isinstance(probs, Mapping):
            unknown = sorted(set(probs) - set(self.task_names))
            if unknown:
                raise ValueError(
                    f"sampling_probs names unknown tasks {unknown}; the tasks are "
                    f"{self.task_names}."
                )
            return [float(probs.get(name, 0.0)) for name in self.task_names]
        return probs

    @property
    def sampling_probs(self) -> list[float]:
        """The current probabilities, in task order."""
        return [float(p) for p in self._sampler.probs]

    def set_sampling_probs(self, probs: Sequence[float] | Mapping[str, float] | Tensor) -> None:
        """Use ``probs`` for every index drawn from now on (normalised)."""
        if isinstance(probs, Tensor):
            probs = probs.detach().cpu().tolist()
        self._sampler.set_probs(self._in_task_order(probs))

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.num_samples):  # one global draw per index: probabilities read now
            task, row = self._sampler.draw(self.world_size)[self.rank]
            yield self._rows[task][row]

    def state_dict(self) -> dict[str, Any]:
        return {"task_names": list(self.task_names), "sampler": self._sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = list(state.get("task_names", []))
        if saved != self.task_names:
            raise ValueError(
                f"This sampler state was made with tasks {saved}, but this sampler has "
                f"{self.task_names}. Resume with the same task list (same names, same order)."
            )
        self._sampler.load_state_dict(state["sampler"])
