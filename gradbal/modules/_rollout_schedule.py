"""Which rollout each training micro-batch uses: TRL's generate-then-reuse cycle in Lightning terms.

With ``K = accumulate_grad_batches`` micro-batches per optimiser step and ``num_iterations = I``,
one *generation cycle* is ``I`` optimiser steps (``K * I`` micro-batches), as TRL's
``steps_per_generation = gradient_accumulation_steps`` with ``num_iterations``: the first
optimiser step of the cycle generates one rollout per micro-batch position ``k`` (from that
micro-batch's prompts), and each of the cycle's ``I - 1`` later optimiser steps trains on the
same ``K`` rollouts again, position ``k`` on rollout ``k``. The data batches Lightning feeds on
those reuse micro-batches are not used (the sampler still advances, identically on a resumed run).

Example (``K = 2``, ``I = 2``): micro-batches 0, 1 (step 0) generate rollouts A, B; micro-batches
2, 3 (step 1) train on A, B again; micro-batch 4 (step 2) generates the next cycle's first.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class RolloutSlot(NamedTuple):
    """Where a micro-batch sits in the generation cycle.

    Attributes:
        cycle: the optimiser step that generated (or generates) the cycle's rollouts.
        position: the micro-batch's index in its accumulation window, ``0 .. K - 1``.
        generate: this micro-batch generates its rollout (the cycle's first optimiser step).
    """

    cycle: int
    position: int
    generate: bool


def rollout_slot(
    global_step: int, batch_idx: int, accumulate: int, num_iterations: int
) -> RolloutSlot:
    """The slot of the micro-batch ``batch_idx`` (within the epoch) at optimiser step ``global_step``.

    The position is ``batch_idx % accumulate``, Lightning's own rule for where an accumulation
    window starts (it zeroes the gradients at ``batch_idx % accumulate_grad_batches == 0``).

    Example::

        >>> [rollout_slot(step, b, 2, 2) for step, b in [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)]]
        ... # doctest: +NORMALIZE_WHITESPACE
        [RolloutSlot(cycle=0, position=0, generate=True),
         RolloutSlot(cycle=0, position=1, generate=True),
         RolloutSlot(cycle=0, position=0, generate=False),
         RolloutSlot(cycle=0, position=1, generate=False),
         RolloutSlot(cycle=2, position=0, generate=True)]
    """
    if accumulate < 1 or num_iterations < 1:
        raise ValueError(
            f"accumulate and num_iterations must be >= 1. Got accumulate={accumulate!r}, "
            f"num_iterations={num_iterations!r}."
        )
    return RolloutSlot(
        cycle=global_step - global_step % num_iterations,
        position=batch_idx % accumulate,
        generate=global_step % num_iterations == 0,
    )


class RolloutBuffer(Generic[T]):
    """The current cycle's rollouts, one per micro-batch position.

    A reuse micro-batch whose position has no rollout of the current cycle (after a resume in
    the middle of a cycle, or when an epoch ended the generating window early) gets ``None``
    from :meth:`get` and must generate one, as TRL does when its buffer is empty.

    Example::

        >>> buffer: RolloutBuffer[str] = RolloutBuffer()
        >>> buffer.put(RolloutSlot(0, 1, True), "B")
        >>> buffer.get(RolloutSlot(0, 1, False)), buffer.get(RolloutSlot(2, 1, False))
        ('B', None)
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[int, T]] = {}

    def get(self, slot: RolloutSlot) -> T | None:
        """The rollout generated for ``slot``'s cycle and position, or ``None``."""
        stored = self._items.get(slot.position)
        return stored[1] if stored is not None and stored[0] == slot.cycle else None

    def put(self, slot: RolloutSlot, item: T) -> None:
        """Keep ``item`` as the rollout of ``slot``'s cycle and position."""
        self._items[slot.position] = (slot.cycle, item)

    def clear(self) -> None:
        """Drop every rollout."""
        self._items.clear()
