"""IPO (Azar et al. 2023): regress the log-ratio margin onto a fixed target instead of a sigmoid."""

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
    per_token,
)

__all__ = ["IPO", "ipo_loss"]


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> PreferenceLoss:
    r"""IPO loss per pair (Azar et al. 2023, arXiv:2310.12036, eq. 17): ``(h - 1 / (2 beta))^2``.

    ``h = log(pi_w / ref_w) - log(pi_l / ref_l)`` from whatever log-probs are passed (the
    :class:`IPO` class passes per-token means, as TRL ``loss_type="ipo"`` does). ``beta`` is the
    paper's ``tau``: the margin is pulled to ``1 / (2 beta)`` and no further, unlike DPO's.

    Args:
        policy_chosen_logps: ``[B]``.
        policy_rejected_logps: ``[B]``.
        ref_chosen_logps: ``[B]``.
        ref_rejected_logps: ``[B]``.
        beta: Regularisation ``tau`` > 0.

    Returns:
        :class:`PreferenceLoss` (rewards ``beta * log-ratio`` of the log-probs passed).

    Raises:
        ValueError: On bad shapes or ``beta <= 0``.

    Example::

        >>> t = torch.tensor
        >>> ipo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5).losses  # (2 - 1)^2
        tensor([1.])
    """
    check_beta("ipo_loss", beta)
    check_pair_shapes(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    chosen = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected = policy_rejected_logps - ref_rejected_logps  # [B]
    losses = torch.square(chosen - rejected - 1 / (2 * beta))  # [B]
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={},
    )


class IPO(PreferenceObjective):
    """The IPO objective (:func:`ipo_loss`).

    Args:
        beta: ``tau`` > 0; the target margin is ``1 / (2 beta)``.
        length_normalize: Use per-token mean log-probs (TRL's IPO), so the target margin does not
            depend on completion length; ``False`` uses sequence sums as in the paper.

    Raises:
        ValueError: On ``beta <= 0``.

    Example::

        >>> from gradbal.objectives import PreferenceLogps
        >>> t = torch.tensor
        >>> logps = PreferenceLogps(t([-2.0]), t([-6.0]), t([-4.0]), t([-4.0]), t([2]), t([2]))
        >>> IPO(beta=0.5)(logps).losses  # per-token h = 2
        tensor([1.])
    """

    def __init__(self, beta: float = 0.1, length_normalize: bool = True) -> None:
        check_beta("IPO", beta)
        self.beta = beta
        self.length_normalize = length_normalize

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        pc, pr = logps.policy_chosen_logps, logps.policy_rejected_logps
        rc, rr = logps.ref_chosen_logps, logps.ref_rejected_logps
        if self.length_normalize:
            pc, rc = per_token(pc, logps.chosen_lengths), per_token(rc, logps.chosen_lengths)
            pr, rr = per_token(pr, logps.rejected_lengths), per_token(rr, logps.rejected_lengths)
        return ipo_loss(pc, pr, rc, rr, beta=self.beta)

    def __repr__(self) -> str:
        return f"IPO(beta={self.beta}, length_normalize={self.length_normalize})"
