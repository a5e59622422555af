"""``LearningProgressBandit``: EXP3-style exponential weights over tasks, rewarded by progress."""

from __future__ import annotations

import torch
from torch import Tensor

from gradbal.weighting.base import TaskWeighting, check_rate, exp_weight_probs


def importance_weighted_reward(rewards: Tensor, probs: Tensor, measured: Tensor) -> Tensor:
    """EXP3's reward estimate: ``rewards / probs`` where ``measured``, NaN (not observed) elsewhere.

    For a statistic source that observes one arm per round: publish this as the
    ``"learning_progress"`` measurement with ``valid = measured``, ``probs`` the sampling
    probabilities the step was drawn with. (gradbal's ``LearningProgressMonitor`` does not: it
    pools every task drawn in a window, each over its own groups.) Dividing by the probability makes a rarely drawn task's reward count as often,
    in expectation, as a frequently drawn one's (Auer et al. 2002).

    Raises:
        ValueError: If the shapes differ or a measured task has probability <= 0.

    Example::

        >>> importance_weighted_reward(torch.tensor([0.2, 0.3]), torch.tensor([0.1, 0.9]),
        ...                            torch.tensor([True, False]))
        tensor([2., nan])
    """
    if not rewards.shape == probs.shape == measured.shape:
        raise ValueError(
            f"rewards, probs and measured must have one shape [K]. Got {tuple(rewards.shape)}, "
            f"{tuple(probs.shape)}, {tuple(measured.shape)}."
        )
    if (probs[measured] <= 0).any():
        raise ValueError(
            f"A measured task has sampling probability <= 0: {probs.tolist()}. A task drawn "
            "with probability 0 cannot have been measured; pass the probabilities in use."
        )
    return torch.where(
        measured, rewards / probs.clamp_min(torch.finfo(probs.dtype).tiny), torch.nan
    )


class LearningProgressBandit(TaskWeighting):
    """EXP3-style exponential weights over tasks, rewarded by learning progress.

    Online Data Mixing (ODM; Albalak, Pan, Raffel, Wang 2023, "Efficient Online Data Mixing For
    Language Model Pre-Training", arXiv:2312.02406) treats each task as an arm of an EXP3
    bandit (Auer et al. 2002): ``R_hat_i <- alpha R_hat_i + (1 - alpha) R_i / pi_i`` for the
    arms drawn, ``pi = (1 - K eps) softmax(eps R_hat) + eps``. ODM's reward is the training
    loss; here it is the ``"learning_progress"`` statistic (the absolute slope of the task's
    reward, as in the absolute-learning-progress curricula of RL post-training). This rule
    returns ``(1 - gamma) softmax(eta R_hat / max(R_hat)) + gamma / K``.

    Where the state lives (gradbal's design: rules are stateless). ``R_hat`` is the
    ``RuleSchedule``'s EMA of the statistic with ``ema = alpha`` (ODM: 0.9): it updates only
    the tasks a measurement marks ``valid``, exactly ODM's "only the drawn arms" update, and it
    is saved in the scheduler's ``state_dict``, so a resumed run continues the same weights.
    The importance weighting ``R_i / pi_i`` belongs to the source
    (:func:`importance_weighted_reward`), which knows the probabilities a step was drawn with.

    Reconstructed, not in ODM: the reward (learning progress, not loss); a fixed ``eta`` and
    ``gamma`` instead of ODM's decaying ``eps_t = min(1/K, sqrt(ln K / (K t)))``; ``R_hat``
    divided by its largest value, so the rule is scale-invariant like every gradbal rule
    (``eta`` is the log-odds of the most-rewarded task over one with reward 0); and the
    scheduler's clamp of statistics to >= 1% of the largest before the rule sees them.

    Args:
        eta: Learning rate of the exponential weights, > 0.
        gamma: Exploration rate, the share of uniform mixing, in ``[0, 1]``.

    Raises:
        ValueError: On ``eta`` not finite and positive, or ``gamma`` outside ``[0, 1]``.

    Example::

        >>> LearningProgressBandit(eta=1.0, gamma=0.0)(torch.tensor([0.0, 0.5, 1.0]))
        tensor([0.1863, 0.3072, 0.5065])
    """

    statistic = "learning_progress"

    def __init__(self, eta: float = 1.0, gamma: float = 0.1):
        check_rate("LearningProgressBandit", "eta", eta)
        check_rate("LearningProgressBandit", "gamma", gamma, upper=1.0)
        self.eta, self.gamma = eta, gamma

    def forward(self, stats: Tensor) -> Tensor:
        return exp_weight_probs(stats, self.eta, self.gamma)

    def __repr__(self) -> str:
        return f"LearningProgressBandit(eta={self.eta}, gamma={self.gamma})"
