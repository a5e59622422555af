"""Balanced DPO: stop-gradient weights that balance the chosen and rejected parts of the gradient.

Ma et al. (2025, arXiv:2502.20847, "Gradient Imbalance in Direct Preference Optimization") find
that DPO's gradient is dominated by the part that lowers the rejected completion and propose
"Balanced-DPO", a re-weighting of the two parts; their exact loss could not be retrieved. What is
implemented here is the construction of AdaDPO (arXiv:2605.28440), which has the same intent and
is the reference design of ``papers.md`` section 2.3: weights on the two log-ratios, computed from
the per-token (geometric-mean) probability ratio ``r`` under stop-gradient and clipped, so that
the two parts have equal magnitude with respect to the per-token probabilities (equal lengths,
clip inactive). With respect to the sequence probabilities the imbalance ``pi_w / pi_l = r^n``
only changes by the factor ``w_l / w_w``. The derivation and numbers are in docs/balanced_dpo.md.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from gradbal.objectives.preference import (
    PreferenceLogps,
    PreferenceLoss,
    PreferenceObjective,
    check_beta,
    check_pair_shapes,
    implicit_rewards,
    per_token,
)

__all__ = ["BalancedDPO", "Reweight", "balance_weights", "balanced_dpo_loss"]

Reweight = Literal["chosen", "rejected"]
_logsigmoid = torch.nn.functional.logsigmoid


def _check(owner: str, beta: float, clip: float, reweight: str) -> None:
    check_beta(owner, beta)
    if not (clip >= 1 and math.isfinite(clip)):
        raise ValueError(
            f"{owner}: clip (C) bounds the balancing weight and must be a finite number >= 1. "
            f"Got {clip!r}. AdaDPO reports C = 2 (robust in [1.5, 2.5])."
        )
    if reweight not in ("chosen", "rejected"):
        raise ValueError(
            f"{owner}: reweight must be 'chosen' (scale the chosen part by min(r, C), AdaDPO) "
            f"or 'rejected' (scale the rejected part by min(1/r, C)). Got {reweight!r}."
        )


def balance_weights(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    *,
    clip: float = 2.0,
    reweight: Reweight = "chosen",
) -> tuple[Tensor, Tensor]:
    r"""Detached weights ``(w_w, w_l)`` ``[B]`` that multiply ``beta`` on each log-ratio.

    With ``r = exp(mean_t log pi_w - mean_t log pi_l)`` the per-token probability ratio:
    ``reweight="chosen"`` gives ``w_w = min(r, C), w_l = 1`` (clips where ``r > C``; lowers the
    chosen coefficient where ``r < 1``); ``reweight="rejected"`` gives ``w_w = 1,
    w_l = min(1 / r, C)`` (clips where ``r < 1 / C``; raises the rejected coefficient where
    ``r < 1``). Both give ``w_w / w_l = r`` for ``1 / C <= r <= C`` only; clipped, the ratio is
    ``C`` and ``1 / C`` respectively. Computed in log space, so long or unlikely completions
    cannot overflow.

    Example::

        >>> t = torch.tensor
        >>> w_w, w_l = balance_weights(t([-2.0, -1.0]), t([-4.0, -9.0]), t([2, 1]), t([2, 1]))
        >>> w_w, w_l  # r = e and e^8 (clipped at 2)
        (tensor([2., 2.]), tensor([1., 1.]))
        >>> balance_weights(t([-2.0]), t([-4.0]), t([2]), t([2]), reweight="rejected")
        (tensor([1.]), tensor([0.3679]))
    """
    with torch.no_grad():
        log_ratio = per_token(policy_chosen_logps, chosen_lengths) - per_token(
            policy_rejected_logps, rejected_lengths
        )  # [B] log r
        ones = torch.ones_like(log_ratio)  # [B]
        if reweight == "chosen":
            return log_ratio.clamp(max=math.log(clip)).exp(), ones  # [B], [B]
        return ones, (-log_ratio).clamp(max=math.log(clip)).exp()  # [B], [B]


def balanced_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    *,
    beta: float = 0.1,
    clip: float = 2.0,
    reweight: Reweight = "chosen",
) -> PreferenceLoss:
    r"""``-log sigma(beta w_w log(pi_w / ref_w) - beta w_l log(pi_l / ref_l))`` per pair.

    The weights come from :func:`balance_weights` (stop-gradient). The gradient is
    ``-beta sigma(-z) [w_w grad log pi_w - w_l grad log pi_l]``. With respect to the per-token
    probabilities ``p̄ = pi^(1 / n)`` the two parts are equal where the clip is inactive and the
    lengths are equal (DPO: ratio ``r``). With respect to the sequence probabilities the ratio
    ``|dL/d pi_l| / |dL/d pi_w| = (pi_w / pi_l) (w_l / w_w)`` stays essentially DPO's
    ``pi_w / pi_l = r^n``: the weights change it by one factor between ``1 / C`` and ``C``.

    Args:
        policy_chosen_logps: ``[B]`` summed log-probs of the chosen completions.
        policy_rejected_logps: ``[B]`` of the rejected completions.
        ref_chosen_logps: ``[B]``.
        ref_rejected_logps: ``[B]``.
        chosen_lengths: ``[B]`` token counts of the chosen completions (for per-token means).
        rejected_lengths: ``[B]`` of the rejected completions.
        beta: Inverse temperature, > 0.
        clip: ``C >= 1``, the largest weight.
        reweight: ``"chosen"``: scale the chosen part by ``min(r, C)`` (AdaDPO);
            ``"rejected"``: scale the rejected part by ``min(1 / r, C)`` instead (the other
            reading of "balanced").

    Returns:
        :class:`PreferenceLoss`; rewards use the unweighted ``beta`` (comparable with DPO's);
        diagnostics ``balance_weight/chosen`` (``w_w``) and ``balance_weight/rejected`` (``w_l``).

    Raises:
        ValueError: On bad shapes, ``beta <= 0``, ``clip < 1`` or an unknown ``reweight``.

    Example::

        >>> t = torch.tensor
        >>> out = balanced_dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), t([1]), t([1]),
        ...                         beta=1.0)  # w_w = min(e, 2) = 2: z = 2*0.5 + 0.5
        >>> out.losses, out.diagnostics["balance_weight/chosen"]  # -log sigma(1.5)
        (tensor([0.2014]), tensor([2.]))
    """
    _check("balanced_dpo_loss", beta, clip, reweight)
    check_pair_shapes(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
    )
    w_w, w_l = balance_weights(
        policy_chosen_logps,
        policy_rejected_logps,
        chosen_lengths,
        rejected_lengths,
        clip=clip,
        reweight=reweight,
    )  # [B], [B]
    chosen = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected = policy_rejected_logps - ref_rejected_logps  # [B]
    losses = -_logsigmoid(beta * (w_w * chosen - w_l * rejected))  # [B]
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={"balance_weight/chosen": w_w, "balance_weight/rejected": w_l},
    )


class BalancedDPO(PreferenceObjective):
    """Balanced DPO, AdaDPO-style construction (:func:`balanced_dpo_loss`).

    Named for the intent of Ma et al. (2025); the formula is AdaDPO's (papers.md 2.3), not
    verified to be Ma et al.'s. See docs/balanced_dpo.md.

    Args:
        beta: Inverse temperature, > 0.
        clip: ``C >= 1``, the largest balancing weight (AdaDPO: 2).
        reweight: ``"chosen"`` (default, AdaDPO) scales the chosen part by ``min(r, C)``;
            ``"rejected"`` scales the rejected part by ``min(1 / r, C)`` (``r``: per-token
            probability ratio chosen over rejected). The same ratio of the two parts where
            ``1 / C <= r <= C``, different outside; each scales its coefficient up or down
            depending on whether ``r`` is above or below 1.

    Raises:
        ValueError: On ``beta <= 0``, ``clip < 1`` or an unknown ``reweight``.

    Example::

        >>> BalancedDPO(beta=0.1)
        BalancedDPO(beta=0.1, clip=2.0, reweight='chosen')
    """

    @property
    def diagnostic_names(self) -> tuple[str, ...]:
        return ("balance_weight/chosen", "balance_weight/rejected")

    def __init__(self, beta: float = 0.1, clip: float = 2.0, reweight: Reweight = "chosen") -> None:
        _check("BalancedDPO", beta, clip, reweight)
        self.beta = beta
        self.clip = clip
        self.reweight: Reweight = reweight

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        return balanced_dpo_loss(*logps, beta=self.beta, clip=self.clip, reweight=self.reweight)

    def __repr__(self) -> str:
        return f"BalancedDPO(beta={self.beta}, clip={self.clip}, reweight={self.reweight!r})"
