"""Linear warmup, then linear decay to the end of training.

Linear decay ``eta_t = eta_max * (1 - t / T)`` is the worst-case optimal last-iterate schedule of
Defazio, Cutkosky, Mehta and Mishchenko, "When, Why and How Much? Adaptive Learning Rate
Scheduling by Refinement" (arXiv 2310.07831), and matches or beats cosine in their sweep. The
warmup (``s / W`` for ``s < W``) and the floor ``min_lr_ratio`` are the common practice of
``transformers.get_linear_schedule_with_warmup`` (reconstructed, not in the paper): after the
warmup ``p = (s - W) / (T - W)`` and the multiplier is ``m + (1 - m) * (1 - p)``; after
``total_steps`` it stays at ``m = min_lr_ratio``.
"""

from __future__ import annotations

from torch.optim import Optimizer

from gradbal.schedules._base import ScheduleLR
from gradbal.schedules._checks import check_ratio, check_steps, check_warmup_before_total


def linear_multiplier(
    step: float, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """The linear-with-warmup multiplier at optimizer step ``step`` (no argument checks; ``step`` may be fractional)."""
    if step < warmup_steps:
        return step / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - p)


class LinearWithWarmup(ScheduleLR):
    """Linear warmup then linear decay: ``lr = optimizer lr * linear_multiplier(step)``.

    Example (YAML)::

        lr_scheduler:
          class_path: gradbal.schedules.LinearWithWarmup
          init_args: {warmup_steps: 10, total_steps: 400}

    Args:
        optimizer: the optimizer whose ``lr`` is the peak.
        warmup_steps: steps of linear warmup from 0 to the peak (0: start at the peak).
        total_steps: step at which the lr reaches ``min_lr_ratio``; set it to ``trainer.max_steps``.
        min_lr_ratio: multiplier at ``total_steps`` and after.
    """

    ARGUMENTS = ("warmup_steps", "total_steps", "min_lr_ratio")

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.0,
    ) -> None:
        owner = "LinearWithWarmup"
        check_steps(owner, "warmup_steps", warmup_steps, minimum=0)
        check_steps(owner, "total_steps", total_steps, minimum=1)
        check_ratio(owner, "min_lr_ratio", min_lr_ratio)
        check_warmup_before_total(owner, warmup_steps, total_steps)
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def multiplier(self, step: int) -> float:
        """The multiplier of the optimizer's lr at optimizer step ``step``."""
        return linear_multiplier(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr_ratio=self.min_lr_ratio,
        )
