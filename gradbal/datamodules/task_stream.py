"""TaskStream: the one owner of a MultiTaskDataModule's task mixture and its resumable position."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from gradbal.datamodules.task_sampler import WeightedTaskSampler, validate_sampling_probs

Indices = list[tuple[int, int]]  # one global batch: (task, row) pairs
Coverage = Callable[[int], Mapping[int, int] | None]  # stream step -> {task: min per slice}


class TaskStream:
    """The task mixture and the stream of global batches drawn from it.

    It owns every piece of mixture state, each stored once:

    * the sampling probabilities, validated against the task names where they come in
      (``__init__``, :meth:`set_probs`, :meth:`load_state_dict`); before :meth:`start` they are
      held here, afterwards only by the seeded :class:`WeightedTaskSampler` that draws with them;
    * the sampler's generator and each task's pass and position;
    * the bookkeeping that makes a mid-epoch resume exact: global batches ``drawn``, global
      batches ``consumed`` (handed to ``training_step``), and the batches drawn but not consumed
      yet (Lightning prefetches one), which a restored stream hands out first, unchanged.

    :meth:`state_dict` is the whole of it; ``MultiTaskDataModule.state_dict`` returns it as is,
    so checkpoints written before this class existed load unchanged.

    Args:
        task_names: The tasks, in the order the batches' ``task_id`` index.
        probs: One value per task (list in task order, or ``{task_name: value}``), normalised;
            ``None``: uniform.
        seed: Seeds the sampler.

    Raises:
        ValueError: Bad probabilities (wrong length or names, NaN/inf, negative, all zero).

    Example::

        >>> stream = TaskStream(["a", "b"], probs={"a": 3, "b": 1}, seed=0)
        >>> stream.sampling_probs
        [0.75, 0.25]
        >>> stream.start([5, 5]); step, indices = stream.next_batch(4)
        >>> step, len(indices), stream.drawn
        (0, 4, 1)
    """

    def __init__(
        self,
        task_names: Sequence[str],
        probs: Sequence[float] | Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.task_names = list(task_names)
        self.seed = seed
        self._given = self._in_task_order(probs)  # until start(); then the sampler holds them
        validate_sampling_probs(self._given, self.task_names)  # fail at construction
        self._sampler: WeightedTaskSampler | None = None
        self.drawn = 0  # global batches drawn so far
        self.consumed = 0  # global batches handed to training_step so far
        self._pending: deque[tuple[int, Indices]] = deque()  # drawn, not consumed yet
        self._undelivered: deque[tuple[int, Indices]] = deque()  # restored: hand out first
        self._restored: dict[str, Any] | None = None  # a state loaded before start()

    def _in_task_order(
        self, probs: Sequence[float] | Mapping[str, float] | Tensor | None
    ) -> list[float]:
        """``probs`` as a list in task order (``None``: uniform), not yet validated."""
        names = self.task_names
        if probs is None:
            return [1.0 / len(names)] * len(names)
        if isinstance(probs, Mapping):
            unknown = sorted(set(probs) - set(names))
            missing = sorted(set(names) - set(probs))
            if unknown or missing:
                raise ValueError(
                    f"sampling_probs names must match the tasks {names}: "
                    f"unknown {unknown}, missing {missing}. Use exactly these task names as keys."
                )
            return [float(probs[name]) for name in names]
        if isinstance(probs, Tensor):
            return [float(p) for p in probs.detach().cpu().flatten().tolist()]
        return [float(p) for p in probs]

    @property
    def probs(self) -> Tensor:
        """The current ``[K]`` float64 probabilities (do not modify; use :meth:`set_probs`)."""
        if self._sampler is None:
            return validate_sampling_probs(self._given, self.task_names)
        return self._sampler.probs

    @property
    def sampling_probs(self) -> list[float]:
        """The current probabilities, in task order, summing to 1."""
        return [float(p) for p in self.probs]

    def set_probs(self, probs: Sequence[float] | Mapping[str, float] | Tensor) -> None:
        """Use ``probs`` (normalised) for every batch drawn from now on; unchanged on an error."""
        given = self._in_task_order(probs)
        if self._sampler is None:
            validate_sampling_probs(given, self.task_names)
            self._given = given
        else:
            self._sampler.set_probs(given)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has built the sampler."""
        return self._sampler is not None

    def start(self, task_sizes: Sequence[int]) -> None:
        """Build the sampler for tasks of these sizes (training rows), then apply a state loaded
        before; a no-op once started."""
        if self._sampler is not None:
            return
        self._sampler = WeightedTaskSampler(
            task_sizes, self._given, seed=self.seed, task_names=self.task_names
        )
        if self._restored is not None:
            self._apply_state(self._restored)
            self._restored = None

    # ---- the stream ----------------------------------------------------------------------

    def remaining(self, steps_per_epoch: int) -> int:
        """Batches left in the current epoch: all of them, except in an epoch resumed midway."""
        return steps_per_epoch - self.consumed % steps_per_epoch

    def next_batch(
        self, n: int, *, slices: int = 1, coverage: Coverage | None = None
    ) -> tuple[int, Indices]:
        """The next global batch, ``(stream step, n (task, row) pairs)``.

        A batch restored from a checkpoint (drawn but not consumed before it was saved) comes
        first, unchanged; otherwise ``n`` pairs are drawn with the current probabilities,
        ``coverage(step)`` giving the minimum pairs per task in each of ``slices`` slices
        (``WeightedTaskSampler.draw``). The batch counts as pending until :meth:`consume`.
        """
        if self._sampler is None:
            raise RuntimeError("TaskStream.next_batch before start(task_sizes).")
        if self._undelivered:
            step, indices = self._undelivered.popleft()
        else:
            step = self.drawn
            minimum = None if coverage is None else coverage(step)
            indices = self._sampler.draw(n, min_per_task=minimum, slices=slices)
            self.drawn += 1
        self._pending.append((step, indices))
        return step, indices

    def consume(self, step: int) -> None:
        """Record that the batch of stream step ``step`` reached ``training_step``."""
        while self._pending and self._pending[0][0] <= step:
            self._pending.popleft()
        self.consumed = step + 1

    # ---- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain values: task names, probabilities, counters, the batches not consumed yet, and
        (once started) the sampler's generator and per-task positions."""
        state: dict[str, Any] = {
            "task_names": list(self.task_names),
            "probs": self.sampling_probs,
            "drawn": self.drawn,
            "consumed": self.consumed,
            "undelivered": [[s, idx] for s, idx in (*self._undelivered, *self._pending)],
        }
        if self._sampler is not None:
            sampler = self._sampler.state_dict()
            del sampler["probs"]  # stored once, above
            state["sampler"] = sampler
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (also one written by ``MultiTaskDataModule`` before this
        class existed, whose ``sampler`` entry repeats the probabilities); before :meth:`start`
        it is applied when the sampler is built."""
        saved = list(state.get("task_names", []))
        if saved != self.task_names:
            raise ValueError(
                f"This checkpoint was made with tasks {saved}, but the DataModule has "
                f"{self.task_names}. Resume with the same task list (same names, same order), "
                "or start a new run from the weights only."
            )
        if self._sampler is None:
            given = [float(p) for p in state["probs"]]
            validate_sampling_probs(given, self.task_names)
            self._given, self._restored = given, state  # reported from now on, applied at start
        else:
            self._apply_state(state)

    def _apply_state(self, state: dict[str, Any]) -> None:
        assert self._sampler is not None
        probs = [float(p) for p in state["probs"]]
        if "sampler" in state:
            # The top-level probabilities win over an old checkpoint's copy in "sampler";
            # restored as saved, so a resumed run draws with the very same values.
            self._sampler.load_state_dict({**state["sampler"], "probs": probs})
        else:  # saved before the sampler was built: fresh generator and positions
            self._sampler.set_probs(probs)
        self.drawn = int(state["drawn"])
        self.consumed = int(state["consumed"])
        self._pending.clear()
        self._undelivered = deque(
            (int(s), [(int(t), int(r)) for t, r in idx]) for s, idx in state["undelivered"]
        )
