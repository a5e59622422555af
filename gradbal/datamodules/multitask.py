"""A multi-task DataModule whose per-task sampling probabilities can change while training runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from typing_extensions import override

from gradbal.datamodules.task_stream import TaskStream
from gradbal.tasks import Task, TaskSource, check_rows

Batch = dict[str, Any]


def collate_rows(rows: Sequence[tuple[int, Mapping[str, Any]]]) -> Batch:
    """Turn ``(task_id, row)`` pairs into a gradbal batch (see docs/design.md)."""
    return {
        "task_id": torch.tensor([task for task, _ in rows], dtype=torch.long),
        "prompt": [str(row["prompt"]) for _, row in rows],
        # A null answer stays None (rewards score it 0), not the text "None".
        "answer": [None if row["answer"] is None else str(row["answer"]) for _, row in rows],
        "columns": [
            {k: v for k, v in row.items() if k not in ("prompt", "answer")} for _, row in rows
        ],
    }


class _TrainStream(IterableDataset[Batch]):
    """Yields the batches the stream has left in its epoch (``steps_per_epoch`` in a whole one)."""

    def __init__(self, stream: TaskStream, steps_per_epoch: int, next_batch: Callable[[], Batch]):
        self.stream, self.steps_per_epoch, self.next_batch = stream, steps_per_epoch, next_batch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        # A resumed epoch yields only what the interrupted one had left; batches drawn but not
        # trained on before the checkpoint (Lightning prefetches one) come first, unchanged.
        for _ in range(self.stream.remaining(self.steps_per_epoch)):
            yield self.next_batch()


class _ValidationRows(Dataset[tuple[int, Mapping[str, Any]]]):
    def __init__(self, tasks: Sequence[Task]):
        self.tasks = tasks
        self.index = [(t, r) for t, task in enumerate(tasks) for r in range(len(task.validation))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, Mapping[str, Any]]:
        task, row = self.index[i]
        return task, self.tasks[task].validation[row]


class MultiTaskDataModule(LightningDataModule):
    """Mixes several tasks into training batches with per-task sampling probabilities.

    Each training batch draws its prompts task by task: every slot picks a task with the current
    ``sampling_probs`` (a seeded ``torch.Generator`` owned by :class:`WeightedTaskSampler`), then
    the next row of that task's shuffled pass. ``set_sampling_probs`` changes the mixture while
    training runs; batches drawn after the call use the new probabilities. Validation evaluates
    every row of every task's validation split, whatever the probabilities.

    Under DDP every rank holds the same sampler and draws the same global batch of
    ``batch_size * world_size`` rows, then keeps its own slice: ranks see different prompts from
    one stream, and the sampler state is identical on every rank, so any rank's checkpoint
    resumes all of them. The mixture and the stream's position (probabilities, generator,
    per-task positions, and batches drawn but not yet trained on) have one owner,
    :attr:`stream` (a :class:`TaskStream`), whose state is :meth:`state_dict`; Lightning saves
    it in every checkpoint. The DataModule logs nothing: ``TaskSamplingScheduler`` logs
    ``train/sampling_prob/<task>``; without one the mixture never changes and is recorded once,
    as the hyperparameter ``sampling_probs`` (``{task: probability}``, e.g. in the logger's
    ``hparams.yaml``).

    Args:
        tasks: task sources, e.g. ``gradbal.tasks.Addition()``; names must be unique.
        batch_size: prompts per training batch per device.
        sampling_probs: one value per task (list, in task order) or ``{task_name: value}``;
            normalised to sum to 1. ``None`` means uniform.
        steps_per_epoch: training batches per epoch (the stream is infinite; this only sets
            where epoch-level hooks such as a sampling scheduler run).
        seed: seeds the sampler.
        val_batch_size: prompts per validation batch; defaults to ``batch_size``.
        max_val_samples_per_task: cap on validation rows per task (``None``: all).

    Raises:
        ValueError: duplicate or no tasks, bad probabilities, non-positive sizes.

    Attributes:
        task_names: the task names, in order; batches carry indices into this list.
        stream: the :class:`TaskStream` that owns the mixture and the stream's position.

    Example::

        >>> from gradbal.tasks import Addition, Reverse
        >>> dm = MultiTaskDataModule([Addition(n_train=50, n_val=10), Reverse(n_train=50, n_val=10)],
        ...                          batch_size=4, sampling_probs={"addition": 3, "reverse": 1})
        >>> dm.task_names, [round(p, 2) for p in dm.sampling_probs]
        (['addition', 'reverse'], [0.75, 0.25])
        >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch), len(batch["prompt"])
        (['answer', 'columns', 'prompt', 'stream_step', 'task_id'], 4)
    """

    def __init__(
        self,
        tasks: list[TaskSource],
        batch_size: int = 8,
        sampling_probs: list[float] | dict[str, float] | None = None,
        steps_per_epoch: int = 100,
        seed: int = 0,
        val_batch_size: int | None = None,
        max_val_samples_per_task: int | None = None,
    ):
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskDataModule needs at least one task, got an empty list.")
        names = [t.name for t in tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"Task names must be unique, got {names} (repeated: {duplicates}). "
                "Give each task its own `name`."
            )
        for arg, value, meaning in (
            ("batch_size", batch_size, "prompts per training batch per device"),
            ("steps_per_epoch", steps_per_epoch, "training batches per epoch"),
            ("val_batch_size", val_batch_size, "prompts per validation batch"),
        ):
            if value is not None and value < 1:
                raise ValueError(
                    f"MultiTaskDataModule: {arg} must be >= 1, got {value}. It is the number of "
                    f"{meaning}; set a positive integer"
                    + (
                        " (or leave it unset to use batch_size)."
                        if arg == "val_batch_size"
                        else "."
                    )
                )
        self.sources = list(tasks)
        self.task_names = names
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.max_val_samples_per_task = max_val_samples_per_task
        self.stream = TaskStream(names, sampling_probs, seed=seed)
        # Shown by the logger when no scheduler logs train/sampling_prob/<task>.
        self.save_hyperparameters(
            {"sampling_probs": dict(zip(names, self.sampling_probs, strict=True))}
        )
        self.tasks: list[Task] = []
        self._measured_every = 0  # 0: no measured-step coverage (set_measured_steps)
        self._min_groups = 0

    @property
    def sampling_probs(self) -> list[float]:
        """The current per-task sampling probabilities, in task order, summing to 1."""
        return self.stream.sampling_probs

    def set_sampling_probs(self, probs: Sequence[float] | Mapping[str, float] | Tensor) -> None:
        """Change the task mixture for every batch drawn from now on.

        Args:
            probs: one finite, non-negative value per task (list/tensor in task order, or a
                ``{task_name: value}`` dict) with a positive sum; normalised here.

        Raises:
            ValueError: wrong length or names, NaN/inf, negative values, or an all-zero vector.
        """
        self.stream.set_probs(probs)

    def draw_prompts(self, n: int, seed: int) -> Batch:
        """``n`` extra training prompts, drawn apart from the stream (DAPO's dynamic sampling).

        Each row picks a task with the current ``sampling_probs``, then a uniformly random row
        of that task's training split, from a generator seeded by ``seed`` alone: the same seed
        and probabilities draw the same prompts (so a resumed run draws what the interrupted one
        did), and the stream's position, per-task passes and state are not touched. Rows are
        drawn with replacement, so an extra prompt can repeat one the stream gives.

        Args:
            n: rows to draw, >= 1.
            seed: the draw's seed (the caller mixes in step, rank and round).

        Returns:
            A batch like the stream's (without ``stream_step``), with tensors on the CPU.
        """
        if n < 1:
            raise ValueError(f"draw_prompts needs n >= 1, got {n}.")
        if not self.stream.started:
            self.setup("fit")
        gen = torch.Generator().manual_seed(seed)
        tasks = torch.multinomial(self.stream.probs, n, replacement=True, generator=gen)
        rows = []
        for t in tasks.tolist():
            size = len(self.tasks[t].train)
            rows.append((t, self.tasks[t].train[int(torch.randint(size, (1,), generator=gen))]))
        return collate_rows(rows)

    def set_measured_steps(self, every_n_steps: int, min_groups_per_task: int) -> None:
        """Make every task measurable in the optimiser steps a gradient monitor measures.

        The optimiser steps ``s`` with ``(s + 1) % every_n_steps == 0`` (the schedule of
        ``TaskGradNormMonitor(every_n_steps=...)``) get, in every batch and on every rank, at
        least ``min_groups_per_task`` prompts of each covered task: the batch is drawn from the
        sampling probabilities as usual, then topped up (``WeightedTaskSampler.draw``). If
        ``K * min_groups_per_task`` exceeds ``batch_size``, each measured step covers the
        ``batch_size // min_groups_per_task`` tasks next in a fixed rotation, so every task is
        covered at least every ``ceil(K / (batch_size // min_groups_per_task))`` measured steps.
        Other steps are drawn exactly as before. The mapping from batches to optimiser steps
        uses ``steps_per_epoch`` and the Trainer's ``accumulate_grad_batches``, so it is
        identical on every rank and after a resume. A task whose sampling probability is 0 is
        never covered: 0 means the task is never sampled.

        Args:
            every_n_steps: The monitor's measuring period, >= 1.
            min_groups_per_task: Prompts per covered task and batch (2: the cross-product
                estimator's minimum); 0 turns the coverage off.

        Raises:
            ValueError: If ``every_n_steps < 1`` or ``min_groups_per_task < 0``.
        """
        if every_n_steps < 1 or min_groups_per_task < 0:
            raise ValueError(
                f"set_measured_steps needs every_n_steps >= 1 and min_groups_per_task >= 0. Got "
                f"{every_n_steps} and {min_groups_per_task}."
            )
        self._measured_every = every_n_steps if min_groups_per_task > 0 else 0
        self._min_groups = min_groups_per_task

    def _coverable(self) -> list[int]:
        """The tasks coverage may add to a batch: those with a non-zero sampling probability."""
        return [task for task, p in enumerate(self.stream.sampling_probs) if p > 0]

    @property
    def tasks_per_measured_step(self) -> int:
        """How many tasks each measured step covers (all sampled ones when the batch allows)."""
        if not self._measured_every:
            return 0
        return min(len(self._coverable()), self.batch_size // self._min_groups)

    def _coverage(self, stream_step: int) -> dict[int, int] | None:
        """``{task: min groups}`` for the batch at ``stream_step``, or ``None`` (plain draw)."""
        covered = self.tasks_per_measured_step
        if covered == 0:
            return None
        trainer = self.trainer
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        per_epoch = self.steps_per_epoch
        epoch, index = divmod(stream_step, per_epoch)
        step = epoch * -(-per_epoch // accumulate) + index // accumulate  # optimiser step
        if (step + 1) % self._measured_every:
            return None
        eligible = self._coverable()
        first = (step // self._measured_every) * covered
        return {eligible[(first + i) % len(eligible)]: self._min_groups for i in range(covered)}

    @override
    def setup(self, stage: str) -> None:
        if not self.tasks:
            self.tasks = [source.load() for source in self.sources]
            loaded = [t.name for t in self.tasks]
            if loaded != self.task_names:
                raise ValueError(
                    f"Task sources report names {self.task_names} but loaded tasks are named "
                    f"{loaded}; a source's `name` must equal its loaded Task's name."
                )
            for task in self.tasks:  # before step 0: no null or empty prompt or answer
                check_rows(task)
        self.stream.start([len(t.train) for t in self.tasks])

    # ---- training stream -------------------------------------------------------------------

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _next_batch(self) -> Batch:
        """This rank's slice of the stream's next global batch, collated."""
        rank, world = self._world()
        step, indices = self.stream.next_batch(
            self.batch_size * world, slices=world, coverage=self._coverage
        )
        mine = indices[rank * self.batch_size : (rank + 1) * self.batch_size]
        batch = collate_rows([(t, self.tasks[t].train[r]) for t, r in mine])
        batch["stream_step"] = step
        return batch

    @override
    def train_dataloader(self) -> DataLoader[Batch]:
        if not self.stream.started:
            self.setup("fit")
        # batch_size=None: the stream yields whole batches; it must live in this process (its
        # state is the TaskStream's), so no worker processes.
        stream = _TrainStream(self.stream, self.steps_per_epoch, self._next_batch)
        return DataLoader(stream, batch_size=None, num_workers=0)

    @override
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "stream_step" in batch:
            self.stream.consume(batch["stream_step"])
        return batch

    # ---- validation ------------------------------------------------------------------------

    def _validation_tasks(self) -> list[Task]:
        if self.max_val_samples_per_task is None:
            return self.tasks
        cap = self.max_val_samples_per_task
        return [
            Task(
                name=t.name,
                train=t.train,
                validation=t.validation.select(range(min(cap, len(t.validation)))),
                reward=t.reward,
                success_threshold=t.success_threshold,
                describe_row=t.describe_row,
            )
            for t in self.tasks
        ]

    @override
    def val_dataloader(self) -> DataLoader[Any]:
        if not self.tasks:
            self.setup("validate")
        dataset = _ValidationRows(self._validation_tasks())
        rank, world = self._world()
        sampler = None
        if world > 1:
            # Unrepeated: every validation row is scored exactly once across ranks.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=False
            )
        return DataLoader(
            dataset, batch_size=self.val_batch_size, sampler=sampler, collate_fn=collate_rows
        )

    @override
    def test_dataloader(self) -> DataLoader[Any]:
        return self.val_dataloader()

    # ---- checkpointing ---------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stream.load_state_dict(state_dict)
