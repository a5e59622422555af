"""Argument checks shared by the schedules: each error says what was wrong, the value, the fix."""

from __future__ import annotations

import math


def check_steps(owner: str, name: str, value: int, *, minimum: int) -> None:
    """``value`` must be an integer step count ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{owner}: {name} must be an integer >= {minimum} (a number of optimizer steps). "
            f"Got {value!r}. Pass a whole number of steps, e.g. {name}: {max(minimum, 10)}."
        )


def check_ratio(
    owner: str, name: str, value: float, *, of: str = "the peak lr", positive: bool = False
) -> None:
    """``value`` must be a finite fraction (of ``of``) in ``[0, 1]`` (``(0, 1]`` if ``positive``)."""
    low_ok = value > 0 if positive else value >= 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        interval = "(0, 1]" if positive else "[0, 1]"
        raise ValueError(
            f"{owner}: {name} must be in {interval} (a fraction of {of}). Got {value!r}. "
            f"Pass a number in {interval}, e.g. {name}: 0.1."
        )


def check_warmup_before_total(owner: str, warmup_steps: int, total_steps: int) -> None:
    """A schedule that decays after its warmup needs ``warmup_steps < total_steps``."""
    if warmup_steps >= total_steps:
        raise ValueError(
            f"{owner}: warmup_steps must be < total_steps, or nothing is left to decay. Got "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}. Lower warmup_steps."
        )
