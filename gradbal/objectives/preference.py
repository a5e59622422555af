"""The contract every preference objective follows: log-probs of pairs in, per-pair losses out.

A preference objective sees, for each of ``B`` (prompt, chosen, rejected) pairs, the summed
log-probabilities of the chosen and the rejected completion under the policy and under the
reference, and the completions' token counts (:class:`PreferenceLogps`). It returns each pair's
*unreduced* loss plus detached diagnostics (:class:`PreferenceLoss`); the module reduces, applies
task loss weights and logs. Variants are :class:`PreferenceObjective` subclasses chosen in YAML
with ``class_path`` (``gradbal.objectives.DPO``, ``BalancedDPO``, ``BPO``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "PreferenceLogps",
    "PreferenceLoss",
    "PreferenceObjective",
    "check_beta",
    "check_pair_shapes",
    "implicit_rewards",
    "per_token",
]


class PreferenceLogps(NamedTuple):
    """Sequence log-probabilities of ``B`` preference pairs.

    Attributes:
        policy_chosen_logps: ``[B]`` ``sum_t log pi_theta(y_w,t | x, y_w,<t)``, in the graph.
        policy_rejected_logps: ``[B]`` the same for the rejected completion, in the graph.
        ref_chosen_logps: ``[B]`` the reference model's, no gradient.
        ref_rejected_logps: ``[B]`` the reference model's, no gradient.
        chosen_lengths: ``[B]`` completion tokens counted in ``policy_chosen_logps`` (>= 1).
        rejected_lengths: ``[B]`` the same for the rejected completion.
    """

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    ref_chosen_logps: Tensor
    ref_rejected_logps: Tensor
    chosen_lengths: Tensor
    rejected_lengths: Tensor


class PreferenceLoss(NamedTuple):
    """Output of every preference objective.

    Attributes:
        losses: ``[B]`` each pair's loss, in the autograd graph (not reduced).
        chosen_rewards: ``[B]`` detached implicit reward of the chosen completion,
            ``beta * (policy_chosen_logps - ref_chosen_logps)`` (TRL's ``rewards/chosen``).
        rejected_rewards: ``[B]`` the same for the rejected completion.
        diagnostics: ``{name: [B] detached}`` objective-specific values per pair (e.g.
            BalancedDPO's weights); the module logs them as ``train/<name>[/<task>]``.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    diagnostics: dict[str, Tensor]


class PreferenceObjective(ABC):
    """Maps :class:`PreferenceLogps` to a :class:`PreferenceLoss`; YAML picks the subclass.

    The type ``DPOModule`` takes as its ``objective`` argument. Subclasses take scalars in
    ``__init__`` and call a pure loss function (``dpo_loss``, ``balanced_dpo_loss``, ...).

    Example::

        >>> from gradbal.objectives import DPO
        >>> objective: PreferenceObjective = DPO(beta=0.1)
        >>> zeros = torch.zeros(2)
        >>> logps = PreferenceLogps(zeros, zeros, zeros, zeros, torch.ones(2), torch.ones(2))
        >>> objective(logps).losses  # log 2 at the reference
        tensor([0.6931, 0.6931])
    """

    @property
    def diagnostic_names(self) -> tuple[str, ...]:
        """The keys of :attr:`PreferenceLoss.diagnostics` this objective returns, in order
        (default: none). A module that logs them per task sizes its metrics from this, before
        the first batch; an objective that returns diagnostics overrides it."""
        return ()

    @abstractmethod
    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        """Return each pair's loss and diagnostics (the keys :attr:`diagnostic_names` says)."""
        ...


def implicit_rewards(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """Detached DPO implicit reward ``beta * (policy_logps - ref_logps)``, shape of the inputs.

    Example::

        >>> implicit_rewards(torch.tensor([-1.0]), torch.tensor([-3.0]), beta=0.1)
        tensor([0.2000])
    """
    with torch.no_grad():
        return beta * (policy_logps - ref_logps)  # [B]


def check_pair_shapes(*tensors: Tensor) -> None:
    """Raise a ``ValueError`` unless every tensor is ``[B]`` with one ``B``."""
    shapes = [tuple(t.shape) for t in tensors]
    if any(len(s) != 1 for s in shapes) or len(set(shapes)) != 1:
        raise ValueError(
            f"Preference log-probs must all be [B], one summed log-prob per pair. Got shapes "
            f"{shapes}. Sum the per-token log-probs over each completion first (masked_sum)."
        )


def check_beta(owner: str, beta: float) -> None:
    """Raise a ``ValueError`` unless ``beta > 0``."""
    if not beta > 0:
        raise ValueError(
            f"{owner}: beta must be > 0 (it scales the implicit reward). Got {beta!r}. Typical "
            "values are 0.01 to 0.5."
        )


def per_token(logps: Tensor, lengths: Tensor) -> Tensor:
    """``logps / lengths`` with lengths clamped to at least 1 (per-token mean log-prob)."""
    return logps / lengths.clamp(min=1).to(logps.dtype)
