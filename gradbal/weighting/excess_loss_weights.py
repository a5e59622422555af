"""``ExcessLossWeights``: DoReMi-style multiplicative weights on each task's excess loss."""

from __future__ import annotations

from torch import Tensor

from gradbal.weighting.base import TaskWeighting, check_rate, exp_weight_probs


class ExcessLossWeights(TaskWeighting):
    """Multiplicative weights on the excess loss over a reference, smoothed with uniform.

    DoReMi (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model
    Pretraining", arXiv:2305.10429, Alg. 1) updates ``alpha' = alpha * exp(eta * lambda)`` with
    ``lambda_i`` task ``i``'s excess loss ``max(loss_policy - loss_reference, 0)`` (per token),
    then ``alpha = (1 - c) alpha' / sum(alpha') + c / K``; ``eta = 1``, ``c = 1e-3``. This rule
    reads the ``"excess_loss"`` statistic (against the starting policy, issue 15; for DPO the
    frozen reference) and returns ``(1 - smoothing) softmax(eta x / max(x)) + smoothing / K``.

    Where the state lives (gradbal's design: rules are stateless). Without the smoothing,
    DoReMi's ``log alpha_t`` is ``eta`` times the running sum of ``lambda``. The
    ``RuleSchedule``'s EMA with decay ``beta`` is ``(1 - beta)`` times a discounted running sum,
    so feeding the EMA to this rule is exponentiated gradient with discount ``beta`` (``ema``
    close to 1: close to DoReMi's undiscounted sum). The EMA is saved in the scheduler's
    ``state_dict``, so a resumed run continues the same weights.

    Reconstructed, not in DoReMi: online against the starting policy (DoReMi trains a separate
    proxy model and uses the *average* of ``alpha_t`` for the final run); the discount above;
    the smoothing applied to the output instead of inside the recursion; the clip at 0 left to
    the scheduler's clamp of statistics to >= 1% of the largest (negative excess loss: a task
    already better than the reference); and the statistic divided by its largest value, so the
    rule is scale-invariant like every gradbal rule (``eta`` is the log-odds of the task with
    the largest excess loss over one with none).

    Args:
        eta: Step size of the multiplicative update, > 0.
        smoothing: ``c``, the share of uniform mixing, in ``[0, 1]``.

    Raises:
        ValueError: On ``eta`` not finite and positive, or ``smoothing`` outside ``[0, 1]``.

    Example::

        >>> import torch
        >>> ExcessLossWeights(eta=2.0, smoothing=0.0)(torch.tensor([0.0, 0.4]))
        tensor([0.1192, 0.8808])
    """

    statistic = "excess_loss"

    def __init__(self, eta: float = 1.0, smoothing: float = 1e-3):
        check_rate("ExcessLossWeights", "eta", eta)
        check_rate("ExcessLossWeights", "smoothing", smoothing, upper=1.0)
        self.eta, self.smoothing = eta, smoothing

    def forward(self, stats: Tensor) -> Tensor:
        return exp_weight_probs(stats, self.eta, self.smoothing)

    def __repr__(self) -> str:
        return f"ExcessLossWeights(eta={self.eta}, smoothing={self.smoothing})"
