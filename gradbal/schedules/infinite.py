"""The "infinite" schedule: warmup, cosine cooldown to a constant, an open-ended constant phase,
and an optional exponential anneal when a final checkpoint is wanted.

From Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large Language
Models" (arXiv 2403.08763), studied again in Singh et al. 2025, "Beyond Cosine Decay: On the
effectiveness of Infinite Learning Rate Schedule for Continual Pre-training" (arXiv 2503.02844).
With ``W`` warmup steps, ``C`` cooldown steps and ``c = constant_ratio``:

1. warmup, ``s < W``: ``s / W``;
2. cooldown, ``W <= s < W + C``: ``c + (1 - c)/2 * (1 + cos(pi (s - W) / C))``;
3. constant, from ``W + C`` on (until ``anneal_start``, if any): ``c``;
4. anneal, ``A <= s`` with ``A = anneal_start``: ``c * (m / c) ** (min(s - A, t_a) / t_a)`` with
   ``m = min_lr_ratio`` and ``t_a = anneal_steps``, so it reaches ``m`` after ``t_a`` steps and
   stays there. Reconstructed: the paper leaves the anneal's end open (public copies differ on the
   exponent's denominator); here it ends exactly at ``m`` after ``anneal_steps``.

A new task or data stage continues in the constant phase, with no re-warming: resume with the
same arguments. To anneal, resume with ``anneal_start`` set: a resumed schedule takes its
arguments from the config and only its step count from the checkpoint.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

from gradbal.schedules._base import ScheduleLR
from gradbal.schedules._checks import check_ratio, check_steps


def infinite_multiplier(
    step: float,
    *,
    warmup_steps: int,
    cooldown_steps: int,
    constant_ratio: float,
    anneal_start: int | None = None,
    anneal_steps: int = 1,
    min_lr_ratio: float = 1.0,
) -> float:
    """The infinite-schedule multiplier at optimizer step ``step`` (no argument checks; ``step`` may be fractional)."""
    if anneal_start is not None and step >= anneal_start:
        progress = min(step - anneal_start, anneal_steps) / anneal_steps
        return constant_ratio * (min_lr_ratio / constant_ratio) ** progress
    if step < warmup_steps:
        return step / warmup_steps
    if step < warmup_steps + cooldown_steps:
        p = (step - warmup_steps) / cooldown_steps
        return constant_ratio + (1.0 - constant_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    return constant_ratio


class InfiniteSchedule(ScheduleLR):
    """Warmup, cosine cooldown, constant for as long as training goes, optional anneal.

    Example (YAML)::

        lr_scheduler:
          class_path: gradbal.schedules.InfiniteSchedule
          init_args: {warmup_steps: 10, cooldown_steps: 100, constant_ratio: 0.3}

    Args:
        optimizer: the optimizer whose ``lr`` is the peak.
        warmup_steps: steps of linear warmup from 0 to the peak (0: start at the peak).
        cooldown_steps: steps of cosine decay from the peak to ``constant_ratio`` (0: drop at once).
        constant_ratio: multiplier of the open-ended constant phase, in ``(0, 1]``.
        anneal_start: step at which the final exponential anneal starts; ``None``: never. It must
            come after the cooldown.
        anneal_steps: length of the anneal, in steps (used only with ``anneal_start``).
        min_lr_ratio: multiplier at the end of the anneal, in ``(0, constant_ratio]`` (an
            exponential cannot reach 0); used only with ``anneal_start``.
    """

    ARGUMENTS = (
        "warmup_steps",
        "cooldown_steps",
        "constant_ratio",
        "anneal_start",
        "anneal_steps",
        "min_lr_ratio",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        cooldown_steps: int,
        constant_ratio: float,
        anneal_start: int | None = None,
        anneal_steps: int = 100,
        min_lr_ratio: float = 0.01,
    ) -> None:
        owner = "InfiniteSchedule"
        check_steps(owner, "warmup_steps", warmup_steps, minimum=0)
        check_steps(owner, "cooldown_steps", cooldown_steps, minimum=0)
        check_ratio(owner, "constant_ratio", constant_ratio, positive=True)
        check_steps(owner, "anneal_steps", anneal_steps, minimum=1)
        if anneal_start is not None:
            check_steps(owner, "anneal_start", anneal_start, minimum=0)
            if anneal_start < warmup_steps + cooldown_steps:
                raise ValueError(
                    f"{owner}: anneal_start must be at or after the end of the cooldown "
                    f"(warmup_steps + cooldown_steps = {warmup_steps + cooldown_steps}). Got "
                    f"anneal_start={anneal_start}. Start the anneal later, or shorten the cooldown."
                )
            if not (math.isfinite(min_lr_ratio) and 0 < min_lr_ratio <= constant_ratio):
                raise ValueError(
                    f"{owner}: min_lr_ratio must be in (0, constant_ratio={constant_ratio}] (the "
                    f"anneal is exponential, so it cannot reach 0). Got {min_lr_ratio!r}. "
                    f"Use e.g. min_lr_ratio: {constant_ratio / 10:g}."
                )
        self.warmup_steps = warmup_steps
        self.cooldown_steps = cooldown_steps
        self.constant_ratio = constant_ratio
        self.anneal_start = anneal_start
        self.anneal_steps = anneal_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def multiplier(self, step: int) -> float:
        """The multiplier of the optimizer's lr at optimizer step ``step``."""
        return infinite_multiplier(
            step,
            warmup_steps=self.warmup_steps,
            cooldown_steps=self.cooldown_steps,
            constant_ratio=self.constant_ratio,
            anneal_start=self.anneal_start,
            anneal_steps=self.anneal_steps,
            min_lr_ratio=self.min_lr_ratio,
        )
