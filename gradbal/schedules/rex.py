"""REX, the reflected exponential schedule, optionally after a linear warmup.

From Chen, Wolfe and Kyrillidis, "REX: Revisiting Budgeted Training with an Improved Schedule"
(MLSys 2022, arXiv 2107.04197): with progress ``p = t / T``,
``eta_t = eta_min + (eta_max - eta_min) * (1 - p) / (1/2 + (1 - p)/2)``. It falls slower than
linear decay early and faster at the end. Reconstructed (not in the paper, which has no warmup):
an optional linear warmup ``s / W`` for ``s < W``, after which ``p = (s - W) / (T - W)``; after
``total_steps`` the multiplier stays at ``min_lr_ratio``.
"""

from __future__ import annotations

from torch.optim import Optimizer

from gradbal.schedules._base import ScheduleLR
from gradbal.schedules._checks import check_ratio, check_steps, check_warmup_before_total


def rex_multiplier(
    step: float, *, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    """The REX multiplier of the peak lr at optimizer step ``step`` (no argument checks; ``step`` may be fractional)."""
    if step < warmup_steps:
        return step / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    p = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - p) / (0.5 + 0.5 * (1.0 - p))


class REX(ScheduleLR):
    """REX learning rate: ``lr = optimizer lr * rex_multiplier(step)``.

    Example (YAML)::

        lr_scheduler:
          class_path: gradbal.schedules.REX
          init_args: {total_steps: 400, warmup_steps: 10}

    Args:
        optimizer: the optimizer whose ``lr`` is the peak.
        total_steps: step at which the lr reaches ``min_lr_ratio``; set it to ``trainer.max_steps``.
        warmup_steps: steps of linear warmup before the REX curve (0, the paper's choice: none).
        min_lr_ratio: multiplier at ``total_steps`` and after.
    """

    ARGUMENTS = ("total_steps", "warmup_steps", "min_lr_ratio")

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        owner = "REX"
        check_steps(owner, "total_steps", total_steps, minimum=1)
        check_steps(owner, "warmup_steps", warmup_steps, minimum=0)
        check_ratio(owner, "min_lr_ratio", min_lr_ratio)
        check_warmup_before_total(owner, warmup_steps, total_steps)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def multiplier(self, step: int) -> float:
        """The multiplier of the optimizer's lr at optimizer step ``step``."""
        return rex_multiplier(
            step,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
        )
