"""FAMO's math (torch only): loss weights from task logits, and the logits' update.

FAMO (Liu, Feng, Stone, Liu 2023, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS,
arXiv:2306.03792, Sec. 3, Alg. 1; reference code ``Cranial-XIX/FAMO`` ``famo.py``) keeps task
logits ``xi``, ``z = softmax(xi)``, and minimises ``sum_i z_i log L_i`` per step, whose gradient
is ``sum_i (z_i / L_i) grad L_i``: loss weights ``w_i = (z_i / L_i) / sum_j (z_j / L_j)``
(:func:`famo_weights`; the reference code's ``c`` normalises the same way). After a step, with
``delta_i = log L_i(t) - log L_i(t+1)`` (each task's decrease of log loss), the logits descend
along ``J_softmax(xi)^T delta + gamma xi`` (:func:`famo_logit_grad`; the reference code with
Adam, lr 0.025, weight decay gamma = 0.01, :func:`adam_step`): a task whose log loss fell
faster than the others' loses weight, so the tasks' log losses fall at equal rates.
The stateful wiring is :class:`gradbal.callbacks.FAMOReweighter`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def famo_weights(logits: Tensor, losses: Tensor) -> Tensor:
    """``[K]`` FAMO loss weights ``(z / L) / sum(z / L)``, ``z = softmax(logits)`` (float64).

    Args:
        logits: ``[K]`` the task logits ``xi``.
        losses: ``[K]`` positive task losses ``L``.

    Example::

        >>> famo_weights(torch.zeros(2), torch.tensor([1.0, 3.0]))  # uniform z: w ∝ 1 / L
        tensor([0.7500, 0.2500], dtype=torch.float64)
    """
    log_w = torch.log_softmax(logits.double(), 0) - torch.log(losses.double())  # [K]
    return torch.softmax(log_w, 0)


def famo_logit_grad(logits: Tensor, delta: Tensor) -> Tensor:
    """``[K]`` ``J_softmax(logits)^T delta = z * (delta - z . delta)`` (float64).

    Args:
        logits: ``[K]`` the task logits ``xi``.
        delta: ``[K]`` each task's decrease of log loss over the step (0: no evidence).

    Example::

        >>> famo_logit_grad(torch.zeros(2), torch.tensor([1.0, 0.0]))
        tensor([ 0.2500, -0.2500], dtype=torch.float64)
    """
    z = torch.softmax(logits.double(), 0)
    d = delta.double()
    return z * (d - (z * d).sum())


class AdamState(NamedTuple):
    """One Adam step's result: the parameters and the moment estimates (all ``[K]`` float64)."""

    params: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor


def adam_step(
    state: AdamState,
    grad: Tensor,
    step: int,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> AdamState:
    """One step of ``torch.optim.Adam`` (L2 weight decay added to the gradient, no amsgrad), as
    a pure function, so the callback keeps its state as plain numbers.

    Args:
        state: The parameters and moments before the step.
        grad: ``[K]`` the gradient.
        step: The step's number, from 1 (bias correction).
        lr: Learning rate.
        weight_decay: ``gamma``: ``grad + gamma * params``.
    """
    params, exp_avg, exp_avg_sq = state
    beta1, beta2 = betas
    grad = grad + weight_decay * params
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step) + eps
    params = params - (lr / (1 - beta1**step)) * exp_avg / denom
    return AdamState(params, exp_avg, exp_avg_sq)
