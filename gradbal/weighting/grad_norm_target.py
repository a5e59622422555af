"""``GradNormTarget``: GradNorm's target gradient norms ``mean(G) r_i^alpha``, solved for the weights."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradbal.weighting.base import GradNormStatistic, TaskWeighting, check_grad_statistic


class GradNormTarget(TaskWeighting):
    """Loss weights that give each task GradNorm's target gradient norm: ``w_i ∝ r_i^alpha / G_i``.

    GradNorm (Chen, Badrinarayanan, Lee, Rabinovich 2018, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML, arXiv:1711.02257, Sec. 3.2)
    wants each task's *weighted* gradient norm ``G_W^(i) = ||grad_W w_i L_i|| = w_i G_i`` at the
    target ``mean_j G_W^(j) * r_i^alpha`` (its loss ``L_grad``), with ``r_i = L~_i / mean_j L~_j`` the
    relative inverse training rate and ``L~_i = L_i(t) / L_i(0)`` the loss ratio (Sec. 3.1), and
    ``sum_i w_i = K``. Every task is at the same fraction of its target when
    ``w_i G_i = c r_i^alpha`` for one ``c``: ``w_i ∝ r_i^alpha / G_i``. This rule returns that,
    normalised (the loss reweighter scales it to average 1, GradNorm's ``sum w = K``). ``c`` is
    ``mean(w G)`` itself, so the L1 gap is 0, where ``mean(r^alpha) = 1`` (``alpha`` 0 or 1);
    otherwise no weights close every gap at once, and these leave every task at the same
    ratio of its target. ``alpha = 0`` is :class:`InverseGradNorm` (equal
    weighted norms); a larger ``alpha`` gives the tasks that train slower (larger loss ratio)
    a larger share of the update.

    It reads two statistics (``statistics``): ``G_i^2`` (``"grad_norm_sq"`` from
    ``TaskGradNormMonitor``, or ``"grad_norm_sq_pooled"``), unweighted (the monitors divide the
    task loss weights out), and ``L_i(t) / L_i(0)`` (``"loss_ratio"`` from
    ``LossRatioMonitor``). Called with ``[2, K]``: row 0 the squared norms, row 1 the ratios.
    Scale-invariant in each row.

    Reconstructed, not in GradNorm: the closed-form fixed point. The paper descends on the L1
    gap ``sum_i |w_i G_i - target_i|`` with its own learning rate, one step per training step,
    the target held constant; gradbal measures every task's unweighted ``G_i``, so it solves
    for the weights directly, and the consumer's moving average (``ema``) and ``temperature``
    take the place of that learning rate. Also gradbal's: the norms of the measured parameters
    (the monitor's ``params``, e.g. the last block) for the paper's last shared layer ``W``,
    and ``L_i(0)`` the first window's pooled loss (``LossRatioMonitor``). The loss must measure
    progress (DPO, SFT): GRPO's surrogate loss has mean about 0.

    Args:
        alpha: GradNorm's ``alpha`` >= 0, the strength of the pull towards equal training
            rates (the paper tunes it per task set; LibMTL's default is 1.5).
        statistic: The squared-norm statistic: ``"grad_norm_sq"`` or ``"grad_norm_sq_pooled"``.

    Raises:
        ValueError: If ``alpha`` is negative or not finite, or ``statistic`` is another name.

    Example::

        >>> rule = GradNormTarget(alpha=1.0)
        >>> rule(torch.tensor([[4.0, 1.0], [1.0, 1.0]]))  # equal rates: w ∝ 1 / G
        tensor([0.3333, 0.6667])
        >>> rule(torch.tensor([[1.0, 1.0], [3.0, 1.0]]))  # equal norms: w ∝ r
        tensor([0.7500, 0.2500])
    """

    statistic: GradNormStatistic = "grad_norm_sq"

    def __init__(self, alpha: float = 1.5, statistic: GradNormStatistic = "grad_norm_sq"):
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(
                f"F05: GradNormTarget needs a finite `alpha` >= 0. Got {alpha}. alpha=0 asks "
                "for equal weighted gradient norms, as InverseGradNorm does."
            )
        check_grad_statistic("GradNormTarget", statistic)
        self.alpha = alpha
        self.statistic = statistic

    @property
    def statistics(self) -> tuple[str, ...]:
        return (self.statistic, "loss_ratio")

    def forward(self, stats: Tensor) -> Tensor:
        norm_sq, ratio = stats.double().unbind(0)  # [K], [K]
        # log w = alpha log r - log G; a zero norm is an infinite weight: those tasks share all
        # the mass (by r^alpha), as power_probs treats zeros.
        zero = norm_sq == 0
        if bool(zero.any()):
            norm_sq = torch.where(zero, 1.0, torch.inf)
        rate = ratio / ratio.max() if bool((ratio > 0).any()) else torch.ones_like(ratio)
        logits = self.alpha * torch.log(rate) - 0.5 * torch.log(norm_sq)
        if self.alpha == 0:
            logits = -0.5 * torch.log(norm_sq)  # r^0 = 1, also for r = 0
        if bool(torch.isinf(logits).all()):  # every candidate has r = 0: no preference
            return torch.ones_like(logits)
        return torch.softmax(logits - logits.max(), 0)

    def __repr__(self) -> str:
        if self.statistic == "grad_norm_sq":
            return f"GradNormTarget(alpha={self.alpha})"
        return f"GradNormTarget(alpha={self.alpha}, statistic={self.statistic!r})"
