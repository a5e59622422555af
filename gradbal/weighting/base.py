"""``TaskWeighting``: the base class of every weighting rule, and the one shared input check."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

# The statistics gradbal's own callbacks provide. A rule may name any other statistic: the one
# provided by a callback of the user's (gradbal.callbacks.statistics.StatisticSource).
Statistic = Literal[
    "grad_norm_sq",
    "learning_gain",
    "learnability",
    "nonzero_advantage_share",
    "mean_abs_advantage",
    "learning_progress",
    "learning_progress_signed",
    "task_loss",
    "excess_loss",
    "reward_margin",
    "reward_accuracy",
    "grad_norm_sq_pooled",
    "reward_shortfall",
    "loss_ratio",
]


GradNormStatistic = Literal["grad_norm_sq", "grad_norm_sq_pooled"]


def check_grad_statistic(owner: str, statistic: str) -> None:
    """Raise unless ``statistic`` is one of the squared-gradient-norm statistics."""
    if statistic not in ("grad_norm_sq", "grad_norm_sq_pooled"):
        raise ValueError(
            f"{owner}(statistic=...) reads a squared gradient norm: 'grad_norm_sq' (each measured "
            "step's, from TaskGradNormMonitor) or 'grad_norm_sq_pooled' (pooled over a window "
            f"with a standard error, from PooledGradNormMonitor). Got {statistic!r}."
        )


def check_stats(stats: Tensor) -> None:
    """Raise unless ``stats`` is a non-empty 1-D tensor of finite, non-negative values.

    Raises:
        TypeError: If ``stats`` is not a tensor.
        ValueError: On a wrong shape, a NaN/inf or a negative value.

    Example::

        >>> check_stats(torch.tensor([0.5, -1.0]))
        Traceback (most recent call last):
        ...
        ValueError: Weighting rules take non-negative statistics (clamp them first). Got [0.5, -1.0].
    """
    if not isinstance(stats, Tensor):
        raise TypeError(
            f"Weighting rules take a 1-D tensor, one value per task. Got {type(stats)}."
        )
    if stats.dim() != 1 or stats.numel() == 0:
        raise ValueError(
            f"Weighting rules take a non-empty 1-D tensor [num_tasks]. Got shape {tuple(stats.shape)}."
        )
    if not torch.isfinite(stats).all():
        raise ValueError(f"Weighting rules take finite statistics. Got {stats.tolist()}.")
    if (stats < 0).any():
        raise ValueError(
            f"Weighting rules take non-negative statistics (clamp them first). Got {stats.tolist()}."
        )


class TaskWeighting(ABC):
    """A stateless rule: one non-negative statistic per task -> probabilities that sum to 1.

    Subclasses implement :meth:`forward` (non-negative weights with a positive sum) and
    ``__repr__`` (echoing the constructor arguments), keep no running state (EMAs, counters and
    the last output belong to the callback that calls the rule), and set :attr:`statistic`.
    Calling a rule checks the input once (:func:`check_stats`) and normalises the output.

    Two optional hooks, for rules that need more than one statistic vector in task order:

    * :attr:`statistics`: a rule that reads several statistics lists them all (the first is
      :attr:`statistic`); it is then called with a ``[S, K]`` tensor, one row per statistic in
      that order, and returns ``[K]`` weights. The consumer keeps one moving average per
      statistic.
    * :meth:`bind`: a rule whose configuration names tasks (a task graph) returns from
      ``bind(task_names)`` a copy resolved to those tasks, in that order, and raises there if a
      name is unknown. The consumer binds once at ``setup`` with the DataModule's tasks, and
      binds that result again with the measured tasks when only some are measured. The default
      returns the rule itself.

    The
    sampling scheduler uses the probabilities as they are; the loss reweighter multiplies them by
    the number of tasks, so loss weights average 1 (gradbal's one convention).

    Attributes:
        statistic: What the rule reads: ``"grad_norm_sq"`` (each task's squared gradient norm
            ``||G_k||^2``, from ``TaskGradNormMonitor``), ``"learning_gain"`` (from
            ``LearningGainMonitor``), the name of any other statistic a callback among the
            Trainer's provides (``provides`` of a ``gradbal.callbacks.StatisticSource``), or
            ``None`` (the values are ignored, only their number counts).

    Example::

        >>> class Half(TaskWeighting):
        ...     statistic = None
        ...     def forward(self, stats):
        ...         return torch.ones_like(stats)
        ...     def __repr__(self):
        ...         return "Half()"
        >>> Half()(torch.tensor([3.0, 1.0]))
        tensor([0.5000, 0.5000])
    """

    statistic: Statistic | str | None = None

    @property
    def statistics(self) -> tuple[str, ...]:
        """Every statistic the rule reads, in the order of the rows of its input (default: just
        :attr:`statistic`, or none)."""
        return () if self.statistic is None else (self.statistic,)

    def bind(self, task_names: Sequence[str]) -> TaskWeighting:
        """The rule for these tasks, in this order (default: the rule itself).

        Raises:
            ValueError: In a rule that names tasks, if a name is not among ``task_names``.
        """
        return self

    def __call__(self, stats: Tensor) -> Tensor:
        """Return ``[K]`` probabilities (at least float32) for ``[K]`` non-negative ``stats``
        (``[S, K]``, one row per statistic, for a rule that reads ``S > 1`` statistics)."""
        rows = len(self.statistics)
        if rows > 1:
            if not isinstance(stats, Tensor) or stats.dim() != 2 or stats.shape[0] != rows:
                got = tuple(stats.shape) if isinstance(stats, Tensor) else type(stats)
                raise ValueError(
                    f"{self!r} reads {rows} statistics {list(self.statistics)}: it takes a "
                    f"[{rows}, num_tasks] tensor, one row per statistic. Got {got}."
                )
            for row in stats:
                check_stats(row)
        else:
            check_stats(stats)
        weights = self.forward(stats)
        total = weights.sum()
        if weights.shape != stats.shape[-1:] or not torch.isfinite(total) or total <= 0:
            raise RuntimeError(
                f"{self!r} returned {weights.tolist()} for {stats.tolist()}: weights must be one "
                "finite non-negative value per task with a positive sum (a bug in the rule)."
            )
        return (weights / total).to(torch.promote_types(stats.dtype, torch.float32))

    @abstractmethod
    def forward(self, stats: Tensor) -> Tensor:
        """Return ``[K]`` non-negative weights with a positive sum (normalised by the caller)."""

    @abstractmethod
    def __repr__(self) -> str: ...


def power_probs(stats: Tensor, exponent: float) -> Tensor:
    """``stats ** exponent`` normalised to sum to 1, computed in log space (float64).

    Zeros are handled as limits: with ``exponent < 0`` the zero entries share all the mass; all
    zeros give the uniform vector. Scale-invariant: ``power_probs(c * s, e) == power_probs(s, e)``.

    Example::

        >>> power_probs(torch.tensor([1.0, 4.0]), 0.5)
        tensor([0.3333, 0.6667], dtype=torch.float64)
    """
    x = stats.double()
    zero = x == 0
    if bool(zero.all()) or exponent == 0:
        return torch.full_like(x, 1.0 / x.numel())
    if exponent < 0 and bool(zero.any()):
        return zero.double() / zero.sum()
    log_x = torch.log(x)  # log(0) = -inf: probability 0 (exponent > 0 here)
    # Shift before scaling so every logit is <= 0 and the largest is exactly 0: exponent * log(x)
    # itself overflows to +-inf for a large exponent (power=1e308 on [100, 1000] gave inf - inf
    # = NaN in the softmax).
    log_x = log_x - (log_x.max() if exponent > 0 else log_x.min())
    return torch.softmax(exponent * log_x, 0)


def check_power(name: str, power: float) -> None:
    """Raise ``ValueError`` unless ``power`` is finite and positive."""
    if not (power > 0 and power < float("inf")):
        raise ValueError(
            f"{name} needs a finite `power` > 0. Got {power}. The rule's direction is fixed by "
            "its class (GradProportional favours tasks with large gradients, InverseGradNorm "
            "those with small ones), so pick the other class instead of a negative power, and "
            "Uniform instead of 0."
        )


def exp_weight_probs(stats: Tensor, eta: float, uniform_share: float) -> Tensor:
    """``(1 - u) * softmax(eta * stats / max(stats)) + u / K`` in float64 (``u = uniform_share``).

    The exponential weights of Hedge/EXP3/exponentiated gradient on statistics measured relative
    to the largest one, so the result is scale-invariant like every gradbal rule: ``eta`` is the
    log-odds of the task with the largest statistic over a task with statistic 0. All zeros give
    the uniform vector. ``eta * (x / max - 1)`` lies in ``[-eta, 0]``, finite for any finite
    ``eta``.

    Example::

        >>> exp_weight_probs(torch.tensor([0.0, 2.0]), 1.0, 0.0)
        tensor([0.2689, 0.7311], dtype=torch.float64)
    """
    x = stats.double()
    k = x.numel()
    largest = x.max()
    if largest <= 0:
        return torch.full_like(x, 1.0 / k)
    probs = torch.softmax(eta * (x / largest - 1.0), 0)
    return (1.0 - uniform_share) * probs + uniform_share / k


def check_rate(name: str, arg: str, value: float, *, upper: float | None = None) -> None:
    """Raise ``ValueError`` unless ``0 < value < inf`` (``upper`` given: ``0 <= value <= upper``)."""
    if upper is None:
        if not (value > 0 and value < float("inf")):
            raise ValueError(
                f"{name} needs a finite `{arg}` > 0. Got {value}. A larger `{arg}` moves the "
                "mixture further from uniform; use Uniform for no movement at all."
            )
    elif not 0 <= value <= upper:
        raise ValueError(
            f"{name} needs `{arg}` in [0, {upper:g}] (the share of uniform mixing). Got {value}."
        )
