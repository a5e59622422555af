"""An SFT (negative log-likelihood) term on the chosen completion, added to any preference loss."""

from __future__ import annotations

import math

from torch import Tensor

from gradbal.objectives.preference import (
    PreferenceLogps,
    PreferenceLoss,
    PreferenceObjective,
    check_pair_shapes,
    per_token,
)

__all__ = ["WithChosenNLL", "chosen_nll"]


def chosen_nll(policy_chosen_logps: Tensor, chosen_lengths: Tensor) -> Tensor:
    """Per-token mean NLL of each chosen completion, ``-log pi(y_w) / |y_w|``, ``[B]``.

    The RPO regulariser (Pang et al. 2024, arXiv:2404.19733; TRL ``rpo_alpha``), per pair: TRL
    takes the token mean over the whole batch instead, which weighs long completions more.

    Example::

        >>> import torch
        >>> chosen_nll(torch.tensor([-3.0, -1.0]), torch.tensor([3, 2]))
        tensor([1.0000, 0.5000])
    """
    check_pair_shapes(policy_chosen_logps, chosen_lengths)
    return -per_token(policy_chosen_logps, chosen_lengths)  # [B]


class WithChosenNLL(PreferenceObjective):
    """``objective`` plus ``weight`` times the chosen completion's NLL (:func:`chosen_nll`).

    The usual remedy for falling chosen log-probabilities (RPO; "DPO + SFT"). In YAML::

        objective:
          class_path: gradbal.objectives.WithChosenNLL
          init_args:
            objective: {class_path: gradbal.objectives.DPO, init_args: {beta: 0.1}}
            weight: 1.0

    Args:
        objective: The preference objective to add the term to.
        weight: Weight of the NLL term, >= 0 (RPO uses 1.0).

    Raises:
        ValueError: If ``weight`` is negative or not finite.

    Example::

        >>> import torch
        >>> from gradbal.objectives import DPO, PreferenceLogps
        >>> t = torch.tensor
        >>> logps = PreferenceLogps(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), t([2]), t([2]))
        >>> out = WithChosenNLL(DPO(beta=0.5), weight=1.0)(logps)
        >>> out.losses, out.diagnostics["nll/chosen"]  # 0.3133 + 1/2
        (tensor([0.8133]), tensor([0.5000]))
    """

    def __init__(self, objective: PreferenceObjective, weight: float = 1.0) -> None:
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"WithChosenNLL: weight must be a finite number >= 0. Got {weight!r}.")
        self.objective = objective
        self.weight = weight

    @property
    def diagnostic_names(self) -> tuple[str, ...]:
        return (*self.objective.diagnostic_names, "nll/chosen")

    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        out = self.objective(logps)
        nll = chosen_nll(logps.policy_chosen_logps, logps.chosen_lengths)  # [B]
        return out._replace(
            losses=out.losses + self.weight * nll,
            diagnostics={**out.diagnostics, "nll/chosen": nll.detach()},
        )

    def __repr__(self) -> str:
        return f"WithChosenNLL({self.objective!r}, weight={self.weight})"
