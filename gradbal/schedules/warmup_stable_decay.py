"""Warmup-stable-decay (WSD): linear warmup, a long constant phase, a short decay at the end.

From MiniCPM (Hu et al. 2024, arXiv 2404.06395): ``eta(s) = s/W`` for ``s < W``, ``1`` for
``W <= s < S``, ``f(s - S)`` for ``S <= s``, with the decay over roughly the last 10% of the
steps. The paper's ``f`` is exponential; the decay shapes here are the later common ones:
``linear`` (``1 - p``), ``cosine`` (``(1 + cos(pi p)) / 2``) and ``sqrt`` (``1 - sqrt(p)``,
Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"),
with ``p = (s - S) / D`` the progress through the ``D`` decay steps. Reconstructed (not in the
paper): the decay ends at ``min_lr_ratio`` rather than 0, ``D = round(decay_fraction * T)``, and
after ``total_steps`` the multiplier stays at ``min_lr_ratio``; ``decay_fraction=0`` (``D = 0``)
means no decay at all (warmup, then constant for good), never a jump to ``min_lr_ratio``.

The multiplier scales the optimizer's ``lr`` (``LambdaLR``); step ``s`` is the number of
optimizer steps taken so far (Lightning steps the scheduler once per optimizer step).
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer

from gradbal.schedules._base import ScheduleLR
from gradbal.schedules._checks import check_ratio, check_steps

DecayShape = Literal["linear", "cosine", "sqrt"]
_SHAPES = ("linear", "cosine", "sqrt")


def wsd_multiplier(
    step: float,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_steps: int,
    min_lr_ratio: float = 0.0,
    decay: DecayShape = "linear",
) -> float:
    """The WSD multiplier of the peak lr at optimizer step ``step`` (no argument checks; ``step`` may be fractional)."""
    decay_start = total_steps - decay_steps
    if step < warmup_steps:
        return step / warmup_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    if step >= total_steps:
        return min_lr_ratio
    p = (step - decay_start) / decay_steps
    if decay == "linear":
        shape = 1.0 - p
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        shape = 1.0 - math.sqrt(p)
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


class WarmupStableDecay(ScheduleLR):
    """Warmup-stable-decay learning rate: ``lr = optimizer lr * wsd_multiplier(step)``.

    Example (YAML, under a module's ``init_args``)::

        lr_scheduler:
          class_path: gradbal.schedules.WarmupStableDecay
          init_args: {warmup_steps: 20, total_steps: 400, decay_fraction: 0.1, decay: sqrt}

    Args:
        optimizer: the optimizer whose ``lr`` is the peak.
        warmup_steps: steps of linear warmup from 0 to the peak (0: start at the peak).
        total_steps: step at which the decay ends; set it to ``trainer.max_steps``.
        decay_fraction: share of ``total_steps`` spent decaying, at the end (MiniCPM: ~10%).
        min_lr_ratio: multiplier at the end of the decay and after it.
        decay: shape of the decay: ``linear``, ``cosine`` or ``sqrt`` (``1 - sqrt``).
    """

    ARGUMENTS = ("warmup_steps", "total_steps", "decay_steps", "min_lr_ratio", "decay")

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        decay_fraction: float = 0.1,
        min_lr_ratio: float = 0.0,
        decay: DecayShape = "linear",
    ) -> None:
        owner = "WarmupStableDecay"
        check_steps(owner, "warmup_steps", warmup_steps, minimum=0)
        check_steps(owner, "total_steps", total_steps, minimum=1)
        check_ratio(owner, "decay_fraction", decay_fraction, of="total_steps")
        check_ratio(owner, "min_lr_ratio", min_lr_ratio)
        if decay not in _SHAPES:
            raise ValueError(
                f"{owner}: decay must be one of {list(_SHAPES)}. Got {decay!r}. "
                "Pick one of those, e.g. decay: sqrt for the 1 - sqrt cooldown."
            )
        decay_steps = round(decay_fraction * total_steps)
        if warmup_steps + decay_steps > total_steps:
            raise ValueError(
                f"{owner}: warmup_steps + decay steps must fit in total_steps. Got "
                f"warmup_steps={warmup_steps} + round(decay_fraction * total_steps)={decay_steps} "
                f"> total_steps={total_steps}. Lower warmup_steps or decay_fraction, or raise "
                "total_steps."
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay_steps = decay_steps
        self.min_lr_ratio = min_lr_ratio
        self.decay: DecayShape = decay
        super().__init__(optimizer)

    def multiplier(self, step: int) -> float:
        """The multiplier of the optimizer's lr at optimizer step ``step``."""
        return wsd_multiplier(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            decay_steps=self.decay_steps,
            min_lr_ratio=self.min_lr_ratio,
            decay=self.decay,
        )
