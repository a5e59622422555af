"""DPO (Rafailov et al. 2023): the sigmoid preference loss, with conservative and robust smoothing."""

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

__all__ = ["DPO", "RobustDPO", "dpo_loss", "robust_dpo_loss"]

_logsigmoid = torch.nn.functional.logsigmoid


def _margins(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    check_pair_shapes(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    chosen = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected = policy_rejected_logps - ref_rejected_logps  # [B]
    return chosen - rejected  # [B]


def _check_smoothing(owner: str, label_smoothing: float, upper: float) -> None:
    if not 0.0 <= label_smoothing < upper:
        raise ValueError(
            f"{owner}: label_smoothing is the assumed probability that a pair's label is flipped "
            f"and must be in [0, {upper}). Got {label_smoothing!r}."
        )


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    r"""DPO loss per pair (Rafailov et al. 2023, arXiv:2305.18290, eq. 7), optionally conservative.

    With ``h = log(pi_w / ref_w) - log(pi_l / ref_l)`` (sequence log-ratios):
    ``loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``, ``eps = label_smoothing``.

    * ``eps = 0``: DPO, the same per-pair loss as TRL's ``loss_type="sigmoid"``.
    * ``eps > 0``: conservative DPO (cDPO; Mitchell 2023, "A note on DPO with noisy
      preferences", eq. 3): binary cross-entropy of ``sigma(beta h)`` against the soft label
      ``1 - eps``, for labels flipped with probability ``eps``. Its gradient vanishes at
      ``sigma(beta h) = 1 - eps`` instead of growing ``h`` without bound. TRL 1.16's
      ``loss_type="sigmoid"`` ignores ``label_smoothing`` (there it enters only ``robust``,
      ``exo_pair`` and ``aot``/``aot_unpaired``), so for ``eps > 0`` this is *not* TRL's
      sigmoid loss; older TRL releases computed this cDPO formula under that name.

    The gradient is ``-beta [(1 - eps) sigma(-beta h) - eps sigma(beta h)] [grad log pi_w -
    grad log pi_l]``: one scalar coefficient on the chosen and the rejected part
    (docs/balanced_dpo.md).

    Args:
        policy_chosen_logps: ``[B]`` summed log-probs of the chosen completions.
        policy_rejected_logps: ``[B]`` of the rejected completions.
        ref_chosen_logps: ``[B]`` reference log-probs of the chosen completions.
        ref_rejected_logps: ``[B]`` of the rejected completions.
        beta: Inverse temperature of the implicit reward, > 0.
        label_smoothing: ``eps`` in ``[0, 0.5]``.

    Returns:
        :class:`PreferenceLoss`, no diagnostics.

    Raises:
        ValueError: On shapes that are not one ``[B]``, ``beta <= 0`` or ``eps`` out of range.

    Example::

        >>> t = torch.tensor
        >>> out = dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5)  # h = 2
        >>> out.losses, out.chosen_rewards, out.rejected_rewards  # -log sigma(1)
        (tensor([0.3133]), tensor([0.5000]), tensor([-0.5000]))
    """
    check_beta("dpo_loss", beta)
    _check_smoothing("dpo_loss", label_smoothing, upper=0.5 + 1e-12)
    logits = beta * _margins(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )  # [B]
    losses = -(1 - label_smoothing) * _logsigmoid(logits)  # [B]
    if label_smoothing:
        losses = losses - label_smoothing * _logsigmoid(-logits)  # [B]
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={},
    )


def robust_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> PreferenceLoss:
    r"""Robust DPO (Chowdhury et al. 2024, arXiv:2403.00409, eq. 9): unbiased under label noise.

    ``loss = [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps)``, the
    de-biased loss for labels flipped with probability ``eps``; TRL ``loss_type="robust"``.

    Args:
        policy_chosen_logps: ``[B]``.
        policy_rejected_logps: ``[B]``.
        ref_chosen_logps: ``[B]``.
        ref_rejected_logps: ``[B]``.
        beta: > 0.
        label_smoothing: ``eps`` in ``[0, 0.5)``.

    Returns:
        :class:`PreferenceLoss`, no diagnostics.

    Raises:
        ValueError: On bad shapes, ``beta <= 0`` or ``eps`` out of range.

    Example::

        >>> t = torch.tensor
        >>> out = robust_dpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5,
        ...                       label_smoothing=0.25)  # (0.75*0.3133 - 0.25*1.3133) / 0.5
        >>> out.losses
        tensor([-0.1867])
    """
    check_beta("robust_dpo_loss", beta)
    _check_smoothing("robust_dpo_loss", label_smoothing, upper=0.5)
    logits = beta * _margins(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )  # [B]
    losses = (
        -(1 - label_smoothing) * _logsigmoid(logits) + label_smoothing * _logsigmoid(-logits)
    ) / (1 - 2 * label_smoothing)  # [B]
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        diagnostics={},
    )


class DPO(PreferenceObjective):
    """The DPO objective (:func:`dpo_loss`), with optional cDPO label smoothing.

    Args:
        beta: Inverse temperature, > 0 (TRL's default 0.1).
        label_smoothing: cDPO label-flip probability in ``[0, 0.5]``; 0 is plain DPO (TRL's
            ``loss_type="sigmoid"``), > 0 is cDPO, which TRL 1.16's sigmoid loss does not apply.

    Raises:
        ValueError: On ``beta <= 0`` or ``label_smoothing`` out of range.

    Example::

        >>> from gradbal.objectives import PreferenceLogps
        >>> t = torch.tensor
        >>> logps = PreferenceLogps(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), t([1]), t([1]))
        >>> DPO(beta=0.5)(logps).losses
        tensor([0.3133])
        >>> DPO(beta=0.5)
        DPO(beta=0.5, label_smoothing=0.0)
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        check_beta("DPO", beta)
        _check_smoothing("DPO", label_smoothing, upper=0.5 + 1e-12)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        return dpo_loss(
            logps.policy_chosen_logps,
            logps.policy_rejected_logps,
            logps.ref_chosen_logps,
            logps.ref_rejected_logps,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
        )

    def __repr__(self) -> str:
        return f"DPO(beta={self.beta}, label_smoothing={self.label_smoothing})"


class RobustDPO(PreferenceObjective):
    """Robust DPO (:func:`robust_dpo_loss`) for preference labels flipped with a known rate.

    Args:
        beta: Inverse temperature, > 0.
        label_smoothing: Label-flip probability in ``[0, 0.5)``.

    Raises:
        ValueError: On ``beta <= 0`` or ``label_smoothing`` out of range.

    Example::

        >>> RobustDPO(beta=0.1, label_smoothing=0.1)
        RobustDPO(beta=0.1, label_smoothing=0.1)
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.1) -> None:
        check_beta("RobustDPO", beta)
        _check_smoothing("RobustDPO", label_smoothing, upper=0.5)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        return robust_dpo_loss(
            logps.policy_chosen_logps,
            logps.policy_rejected_logps,
            logps.ref_chosen_logps,
            logps.ref_rejected_logps,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
        )

    def __repr__(self) -> str:
        return f"RobustDPO(beta={self.beta}, label_smoothing={self.label_smoothing})"
