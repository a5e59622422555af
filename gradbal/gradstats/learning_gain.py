"""Learning gain per task (Wu et al. 2025, §3.1) and Spearman's rank correlation, torch only.

Wu et al. ("Imbalanced Gradients in RL Post-Training of Multi-Task LLMs", arXiv:2510.19178)
define task ``k``'s learning gain at step ``t`` as
``Gain_k(t) = (1/s) sum_{i=1..s} R_k(t+i) - (1/s) sum_{i=1..s} R_k(t-i)``, the mean training
reward over the next ``s`` steps minus over the previous ``s``, and find that tasks with larger
gradients do not have larger gains. :func:`spearman` makes that claim checkable on any run.
"""

from __future__ import annotations

import torch
from torch import Tensor


def learning_gain(rewards: Tensor, window: int) -> Tensor:
    """Mean of the last ``window`` rows minus mean of the ``window`` rows before, per task.

    Args:
        rewards: ``[T, K]`` per-step, per-task training reward, oldest row first; NaN where a
            task was absent from a step (missing values are skipped, as ``nanmean``).
        window: ``s``, steps per window, >= 1.

    Returns:
        ``[K]`` float64 gains; NaN where ``T < 2 * window`` or either window has no value for
        the task. The value returned after step ``t`` is the paper's ``Gain(t - window)``.

    Example::

        >>> r = torch.tensor([[0.0, 1.0], [0.2, float("nan")], [0.5, 1.0], [0.7, 0.0]])
        >>> learning_gain(r, window=2)
        tensor([ 0.5000, -0.5000], dtype=torch.float64)
    """
    if window < 1:
        raise ValueError(f"`window` must be >= 1. Got {window}.")
    if rewards.dim() != 2:
        raise ValueError(f"`rewards` must be [T, K]. Got shape {tuple(rewards.shape)}.")
    r = rewards.double()
    if r.shape[0] < 2 * window:
        return torch.full((r.shape[1],), float("nan"), dtype=torch.float64, device=r.device)
    later = torch.nanmean(r[-window:], dim=0)  # [K]
    earlier = torch.nanmean(r[-2 * window : -window], dim=0)  # [K]
    return later - earlier


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman's rank correlation of two ``[K]`` vectors (ties get their average rank).

    Returns:
        A float64 scalar in ``[-1, 1]``; NaN if ``K < 2`` or either vector is constant.

    Example::

        >>> spearman(torch.tensor([1.0, 5.0, 30.0]), torch.tensor([0.3, 0.2, 0.1]))
        tensor(-1., dtype=torch.float64)
    """
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(
            f"`x` and `y` must both be [K]. Got shapes {tuple(x.shape)} and {tuple(y.shape)}."
        )
    rx, ry = _average_ranks(x.double()), _average_ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    if x.numel() < 2 or denominator == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=x.device)
    return ((rx * ry).sum() / denominator).clamp(-1.0, 1.0)


def _average_ranks(v: Tensor) -> Tensor:
    """1-based ranks of ``v [K]``, ties sharing their mean rank (``O(K^2)``, K is small)."""
    less = (v[None, :] < v[:, None]).sum(1)  # [K]
    equal = (v[None, :] == v[:, None]).sum(1)  # [K]
    return less.double() + (equal.double() + 1) / 2
