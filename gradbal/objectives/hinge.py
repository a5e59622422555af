"""Hinge preference loss (SLiC, Zhao et al. 2023): a margin on the log-ratio difference."""

from __future__ import annotations

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

__all__ = ["Hinge", "hinge_loss"]


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> PreferenceLoss:
    r"""Hinge loss per pair: ``max(0, 1 - beta h)`` with ``h`` the log-ratio margin.

    SLiC's rank-calibration loss (Zhao et al. 2023, arXiv:2305.10425, eq. 1) on reference
    log-ratios, as in the DPO paper's comparison and TRL ``loss_type="hinge"``. Pairs whose
    margin already exceeds ``1 / beta`` contribute no gradient.

    Args:
        policy_chosen_logps: ``[B]``.
        policy_rejected_logps: ``[B]``.
        ref_chosen_logps: ``[B]``.
        ref_rejected_logps: ``[B]``.
        beta: > 0; the margin is ``1 / beta``.

    Returns:
        :class:`PreferenceLoss`, no diagnostics.

    Raises:
        ValueError: On bad shapes or ``beta <= 0``.

    Example::

        >>> t = torch.tensor
        >>> hinge_loss(t([-1.0, -1.0]), t([-3.0, -9.0]), t([-2.0] * 2), t([-2.0] * 2),
        ...            beta=0.25).losses  # h = 2 and 8
        tensor([0.5000, 0.0000])
    """
    check_beta("hinge_loss", beta)
    check_pair_shapes(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    chosen = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected = policy_rejected_logps - ref_rejected_logps  # [B]
    losses = torch.relu(1 - beta * (chosen - rejected))  # [B]
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={},
    )


class Hinge(PreferenceObjective):
    """The hinge objective (:func:`hinge_loss`).

    Args:
        beta: > 0; pairs with a log-ratio margin above ``1 / beta`` stop contributing.

    Raises:
        ValueError: On ``beta <= 0``.

    Example::

        >>> Hinge(beta=0.1)
        Hinge(beta=0.1)
    """

    def __init__(self, beta: float = 0.1) -> None:
        check_beta("Hinge", beta)
        self.beta = beta

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        return hinge_loss(
            logps.policy_chosen_logps,
            logps.policy_rejected_logps,
            logps.ref_chosen_logps,
            logps.ref_rejected_logps,
            beta=self.beta,
        )

    def __repr__(self) -> str:
        return f"Hinge(beta={self.beta})"
