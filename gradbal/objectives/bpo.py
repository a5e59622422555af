"""BPO (Sun et al. 2025): a balanced reward margin ``min(r_w, -alpha r_l)`` instead of ``r_w - r_l``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradbal.objectives.preference import (
    PreferenceLogps,
    PreferenceLoss,
    PreferenceObjective,
    check_beta,
    check_pair_shapes,
    implicit_rewards,
)

__all__ = ["BPO", "bpo_loss"]

_logsigmoid = torch.nn.functional.logsigmoid


def _check_alpha(owner: str, alpha: float) -> None:
    if not (0 < alpha <= 1 and math.isfinite(alpha)):
        raise ValueError(
            f"{owner}: alpha (the gap adaptor) must be in (0, 1]. Got {alpha!r}. Smaller values "
            "put more weight on keeping the chosen reward up."
        )


def bpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> PreferenceLoss:
    r"""BPO loss per pair (Sun et al. 2025, arXiv:2506.03557): ``-log sigma(min(r_w, -alpha r_l))``.

    ``r_w = beta log(pi_w / ref_w)`` and ``r_l = beta log(pi_l / ref_l)`` are DPO's implicit
    rewards. DPO's margin ``r_w - r_l`` can grow while ``r_w`` falls ("degraded chosen
    responses"); the balanced margin only grows when *both* the chosen reward rises and the
    rejected one falls, and each pair's gradient goes to whichever of the two is behind.
    ``alpha`` in ``(0, 1]`` is the paper's gap adaptor.

    Args:
        policy_chosen_logps: ``[B]``.
        policy_rejected_logps: ``[B]``.
        ref_chosen_logps: ``[B]``.
        ref_rejected_logps: ``[B]``.
        beta: > 0.
        alpha: Gap adaptor in ``(0, 1]``.

    Returns:
        :class:`PreferenceLoss`; diagnostic ``bpo/chosen_active``: 1 where the chosen term is the
        minimum (gets the gradient), 0 where the rejected term is (ties split the gradient and
        count as chosen).

    Raises:
        ValueError: On bad shapes, ``beta <= 0`` or ``alpha`` outside ``(0, 1]``.

    Example::

        >>> t = torch.tensor
        >>> out = bpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5, alpha=0.5)
        >>> out.losses, out.diagnostics["bpo/chosen_active"]  # min(0.5, 0.25): -log sigma(0.25)
        (tensor([0.5759]), tensor([0.]))
    """
    check_beta("bpo_loss", beta)
    _check_alpha("bpo_loss", alpha)
    check_pair_shapes(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)  # [B] r_w
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)  # [B] r_l
    margin = torch.minimum(chosen, -alpha * rejected)  # [B]
    return PreferenceLoss(
        losses=-_logsigmoid(margin),
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={"bpo/chosen_active": (chosen <= -alpha * rejected).detach().float()},
    )


class BPO(PreferenceObjective):
    """Balanced Preference Optimization (:func:`bpo_loss`), a published fix for falling chosen
    log-probabilities.

    Args:
        beta: Inverse temperature, > 0.
        alpha: Gap adaptor in ``(0, 1]``.

    Raises:
        ValueError: On ``beta <= 0`` or ``alpha`` outside ``(0, 1]``.

    Example::

        >>> BPO(beta=0.1, alpha=0.5)
        BPO(beta=0.1, alpha=0.5)
    """

    @property
    def diagnostic_names(self) -> tuple[str, ...]:
        return ("bpo/chosen_active",)

    def __init__(self, beta: float = 0.1, alpha: float = 1.0) -> None:
        check_beta("BPO", beta)
        _check_alpha("BPO", alpha)
        self.beta = beta
        self.alpha = alpha

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        return bpo_loss(
            logps.policy_chosen_logps,
            logps.policy_rejected_logps,
            logps.ref_chosen_logps,
            logps.ref_rejected_logps,
            beta=self.beta,
            alpha=self.alpha,
        )

    def __repr__(self) -> str:
        return f"BPO(beta={self.beta}, alpha={self.alpha})"
