"""``GradProportional``: more samples to tasks with larger gradients (the paper's diagnostic)."""

from __future__ import annotations

from torch import Tensor

from gradbal.weighting.base import (
    GradNormStatistic,
    TaskWeighting,
    check_grad_statistic,
    check_power,
    power_probs,
)


class GradProportional(TaskWeighting):
    """Probabilities proportional to each task's gradient norm to the power ``power``.

    Reads squared norms ``S_k = ||G_k||^2`` and returns ``p_k ∝ S_k ** (power / 2)``. The
    default ``power=2`` is ``p_k ∝ ||G_k||^2``, the gradient-proportional sampling of Wu et al.
    2025 ("Imbalanced Gradients in RL Post-Training of Multi-Task LLMs", arXiv:2510.19178, §4 /
    App. C; whether they used the norm or its square was not confirmed: ``power=1`` is the
    norm). The paper reports it does not beat uniform sampling on average: it is a diagnostic
    of "large gradient = large learning potential", not a recommended method.

    Args:
        power: Exponent on the gradient norm, > 0.
        statistic: ``"grad_norm_sq"`` (each measured step's estimate, from
            ``TaskGradNormMonitor``) or ``"grad_norm_sq_pooled"`` (pooled over a window with a
            standard error, from ``PooledGradNormMonitor``: with it, the scheduler leaves the
            mixture alone while the tasks' norms are within noise of each other).

    Raises:
        ValueError: If ``power`` is not finite and positive, or ``statistic`` is another name.

    Example::

        >>> import torch
        >>> GradProportional()(torch.tensor([3.0, 1.0])), GradProportional(power=1.0)(torch.tensor([9.0, 1.0]))
        (tensor([0.7500, 0.2500]), tensor([0.7500, 0.2500]))
    """

    statistic: GradNormStatistic = "grad_norm_sq"

    def __init__(self, power: float = 2.0, statistic: GradNormStatistic = "grad_norm_sq"):
        check_power("GradProportional", power)
        check_grad_statistic("GradProportional", statistic)
        self.power = power
        self.statistic = statistic

    def forward(self, stats: Tensor) -> Tensor:
        return power_probs(stats, self.power / 2)

    def __repr__(self) -> str:
        if self.statistic == "grad_norm_sq":  # the default: the same repr (and state key) as before
            return f"GradProportional(power={self.power})"
        return f"GradProportional(power={self.power}, statistic={self.statistic!r})"
