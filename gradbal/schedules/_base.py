"""The ``LambdaLR`` every schedule here derives from: its arguments come from the config."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class ScheduleLR(LambdaLR):
    """A ``LambdaLR`` over ``self.multiplier(step)``.

    A checkpoint restores only the position (the step count and the last lr), never the
    schedule's arguments: a resumed run follows the schedule its config describes (for example
    an ``InfiniteSchedule`` resumed with ``anneal_start`` set starts its anneal), as the rest of
    a resumed config does.
    """

    #: Names of the attributes that hold the schedule's arguments (set by each subclass).
    ARGUMENTS: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer, lambda step: self.multiplier(step))

    def multiplier(self, step: int) -> float:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: v for k, v in state_dict.items() if k not in self.ARGUMENTS}
        super().load_state_dict(state)
