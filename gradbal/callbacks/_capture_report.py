"""What a gradient-capturing monitor measures and why it skips layers, said once (private)."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info

from gradbal.gradstats import TaskGradCapture


def layers_text(owner: str, measured: list[str], skipped: dict[str, str]) -> str:
    """One paragraph: the measured layers, then each skipped layer with its reason.

    Example::

        >>> layers_text("M", ["a", "b"], {"c": "frozen"})
        'M measures 2 layer(s): a, b. Skipped 1: c (frozen).'
    """
    text = f"{owner} measures {len(measured)} layer(s): {', '.join(measured) or 'none'}."
    if skipped:
        text += f" Skipped {len(skipped)}: " + "; ".join(f"{n} ({r})" for n, r in skipped.items())
        text += "."
    return text


def log_layers(trainer: Trainer, owner: str, measured: list[str], skipped: dict[str, str]) -> None:
    """Write :func:`layers_text` as TensorBoard text (``<owner>/layers``), else as an info log."""
    text = layers_text(owner, measured, skipped)
    written = False
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
            if callable(add_text):
                add_text(f"{owner}/layers", text, trainer.global_step)
                written = True
    if not written:
        rank_zero_info(text)


def nothing_captured_warning(owner: str, step: int, capture: TaskGradCapture) -> str:
    """The warning for a measured step in which no measured layer was captured."""
    reasons = {**capture.skipped, **capture.missed_layers()}
    why = "; ".join(f"`{name}`: {reason}" for name, reason in reasons.items())
    return (
        f"{owner} captured no gradient at step {step}: none of its layers could be measured, so "
        f"every task's value is NaN (not measured: nothing is logged, and schedulers keep their "
        f"values). Why, per layer: {why}. Fix the cause, or choose other layers with `params`."
    )
