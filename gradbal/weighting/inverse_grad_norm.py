"""``InverseGradNorm``: fewer samples (or less weight) to tasks with larger gradients."""

from __future__ import annotations

from torch import Tensor

from gradbal.weighting.base import (
    GradNormStatistic,
    TaskWeighting,
    check_grad_statistic,
    check_power,
    power_probs,
)


class InverseGradNorm(TaskWeighting):
    """Probabilities inversely proportional to each task's gradient norm to the power ``power``.

    Reads squared norms ``S_k = ||G_k||^2`` and returns ``p_k ∝ S_k ** (-power / 2)``. With the
    default ``power=1``, ``p_k ||G_k||`` is the same for every task: as sampling probabilities,
    each task's expected share of the update has the same norm; as loss weights (times ``K``),
    each task's weighted gradient has the same norm. This balances the contributions that Wu et
    al. 2025 (arXiv:2510.19178) find dominated by large-gradient tasks.

    Args:
        power: Exponent on the inverse gradient norm, > 0 (``0.5``: a milder correction).
        statistic: ``"grad_norm_sq"`` (each measured step's estimate, from
            ``TaskGradNormMonitor``) or ``"grad_norm_sq_pooled"`` (pooled over a window with a
            standard error, from ``PooledGradNormMonitor``: with it, the scheduler leaves the
            mixture alone while the tasks' norms are within noise of each other).

    Raises:
        ValueError: If ``power`` is not finite and positive, or ``statistic`` is another name.

    Example::

        >>> import torch
        >>> InverseGradNorm()(torch.tensor([9.0, 1.0]))
        tensor([0.2500, 0.7500])
    """

    statistic: GradNormStatistic = "grad_norm_sq"

    def __init__(self, power: float = 1.0, statistic: GradNormStatistic = "grad_norm_sq"):
        check_power("InverseGradNorm", power)
        check_grad_statistic("InverseGradNorm", statistic)
        self.power = power
        self.statistic = statistic

    def forward(self, stats: Tensor) -> Tensor:
        return power_probs(stats, -self.power / 2)

    def __repr__(self) -> str:
        if self.statistic == "grad_norm_sq":  # the default: the same repr (and state key) as before
            return f"InverseGradNorm(power={self.power})"
        return f"InverseGradNorm(power={self.power}, statistic={self.statistic!r})"
