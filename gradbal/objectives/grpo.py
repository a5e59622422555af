"""GRPO's clipped surrogate per token, with DAPO's decoupled clip range and an optional KL term."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from gradbal.objectives.kl import k3_kl


class GRPOTokenLoss(NamedTuple):
    """Output of :func:`grpo_token_loss`; reduce ``per_token_loss`` with a loss aggregation.

    Attributes:
        per_token_loss: ``[N, L]`` loss per token, in the autograd graph, not masked.
        ratio: ``[N, L]`` detached ``pi / pi_old``.
        is_clipped: ``[N, L]`` bool, the clipped branch of the min was active (no policy
            gradient from this token): ``is_low_clipped | is_high_clipped``.
        is_low_clipped: ``[N, L]`` bool, ``ratio < 1 - epsilon_low`` with advantage < 0.
        is_high_clipped: ``[N, L]`` bool, ``ratio > 1 + epsilon_high`` with advantage > 0.
        kl: ``[N, L]`` detached k3 estimate of ``KL(pi || pi_ref)``, or ``None`` without
            ``ref_logprobs``.

    Example::

        >>> lp = torch.zeros(2, 3)
        >>> out = grpo_token_loss(lp, lp, torch.tensor([1.0, -1.0]))
        >>> out.per_token_loss.shape, out.is_clipped.float().mean().item(), out.kl
        (torch.Size([2, 3]), 0.0, None)
    """

    per_token_loss: Tensor
    ratio: Tensor
    is_clipped: Tensor
    is_low_clipped: Tensor
    is_high_clipped: Tensor
    kl: Tensor | None


def _validate(
    pi_logprobs: Tensor,
    pi_old_logprobs: Tensor,
    advantages: Tensor,
    ref_logprobs: Tensor | None,
    epsilon_low: float,
    epsilon_high: float,
    beta: float,
) -> None:
    if pi_logprobs.dim() != 2 or pi_old_logprobs.shape != pi_logprobs.shape:
        raise ValueError(
            "`pi_logprobs` and `pi_old_logprobs` must both be [N, L]. Got "
            f"{tuple(pi_logprobs.shape)} and {tuple(pi_old_logprobs.shape)}. On a fully "
            "on-policy step pass `pi_old_logprobs=pi_logprobs.detach()`."
        )
    if advantages.shape != pi_logprobs.shape[:1]:
        raise ValueError(
            f"`advantages` must be [N] = [{pi_logprobs.shape[0]}], one per sequence. Got "
            f"{tuple(advantages.shape)}. Use `group_advantages(rewards, group_size)`."
        )
    if ref_logprobs is not None and ref_logprobs.shape != pi_logprobs.shape:
        raise ValueError(
            f"`ref_logprobs` must match `pi_logprobs` {tuple(pi_logprobs.shape)}. Got "
            f"{tuple(ref_logprobs.shape)}."
        )
    if not 0.0 <= epsilon_low <= 1.0:
        raise ValueError(
            f"`epsilon_low` must be in [0, 1] (the lower clip bound is 1 - epsilon_low >= 0). "
            f"Got {epsilon_low}. The usual value is 0.2."
        )
    if not (epsilon_high >= 0.0 and math.isfinite(epsilon_high)):
        raise ValueError(
            f"`epsilon_high` must be a finite number >= 0. Got {epsilon_high}. DAPO uses 0.28; "
            "pass None to reuse `epsilon_low`."
        )
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"`beta` must be a finite number >= 0. Got {beta}. Use 0.0 for no KL.")
    if beta > 0.0 and ref_logprobs is None:
        raise ValueError(
            f"`beta={beta}` adds a KL penalty to the reference model, but `ref_logprobs` is None. "
            "Pass the reference model's log-probs of the completion tokens, or set beta=0.0."
        )


def grpo_token_loss(
    pi_logprobs: Tensor,
    pi_old_logprobs: Tensor,
    advantages: Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    importance_weights: Tensor | None = None,
) -> GRPOTokenLoss:
    """Per-token GRPO loss ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta * KL``.

    DeepSeekMath (Shao et al., 2024, arXiv:2402.03300) eq. 3, the GRPO objective, negated into a
    loss, with ``r = pi / pi_old``, one advantage per sequence broadcast over its tokens, and
    the k3 KL estimator of eq. 4 (:func:`~gradbal.objectives.k3_kl`). The decoupled bounds
    ``epsilon_low``/``epsilon_high`` are DAPO's Clip-Higher (Yu et al., 2025, arXiv:2503.14476,
    Sec. 3.1). Checked against TRL ``GRPOTrainer._compute_loss`` (``coef_1``, ``coef_2``,
    ``is_low_clipped``, ``is_high_clipped``). The token-to-scalar reduction (eq. 3's
    ``1/|o_i|`` and ``1/G``, or DAPO's token mean) is left to a loss aggregation
    (:mod:`gradbal.objectives.loss_aggregation`).

    ``pi_old_logprobs`` and ``ref_logprobs`` are treated as constants (detached here). The loss is
    not masked: padding positions hold arbitrary values that the aggregation drops.

    Args:
        pi_logprobs: ``[N, L]`` log-probs of the completion tokens under the current policy.
        pi_old_logprobs: ``[N, L]`` the same under the policy that sampled them;
            ``pi_logprobs.detach()`` for a single on-policy update (then ``r = 1``).
        advantages: ``[N]`` one advantage per sequence.
        epsilon_low: Lower clip range, ratio floor ``1 - epsilon_low``; in ``[0, 1]``.
        epsilon_high: Upper clip range, ratio ceiling ``1 + epsilon_high``; ``None`` reuses
            ``epsilon_low`` (symmetric PPO clip).
        ref_logprobs: ``[N, L]`` reference-model log-probs; needed when ``beta > 0``, and when
            given the KL is also returned for logging.
        beta: KL penalty coefficient.
        importance_weights: ``[N, L]`` constant weights ``w`` of the policy term, which becomes
            ``-w min(r A, clip(r) A)`` (the KL term is not weighted), as TRL applies its vLLM
            truncated importance sampling; see
            :func:`~gradbal.objectives.importance_sampling.tis_weights`. ``None``: ``w = 1``.

    Returns:
        A :class:`GRPOTokenLoss`.

    Raises:
        ValueError: On mismatched shapes, ``epsilon_low`` outside ``[0, 1]``, negative or
            non-finite ``epsilon_high``/``beta``, or ``beta > 0`` without ``ref_logprobs``.

    Example::

        >>> pi = torch.log(torch.tensor([[0.5, 0.8]]))
        >>> old = torch.log(torch.tensor([[0.5, 0.5]]))  # ratios 1.0 and 1.6
        >>> out = grpo_token_loss(pi, old, torch.tensor([2.0]), epsilon_high=0.28)
        >>> out.per_token_loss  # -1.0 * 2 and -min(1.6, 1.28) * 2
        tensor([[-2.0000, -2.5600]])
        >>> out.is_clipped
        tensor([[False,  True]])
    """
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    _validate(pi_logprobs, pi_old_logprobs, advantages, ref_logprobs, epsilon_low, eps_high, beta)
    adv = advantages.detach().unsqueeze(1)  # [N, 1]
    ratio = torch.exp(pi_logprobs - pi_old_logprobs.detach())  # [N, L]
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + eps_high)  # [N, L]
    per_token_loss = -torch.min(ratio * adv, clipped_ratio * adv)  # [N, L]
    if importance_weights is not None:
        if importance_weights.shape != pi_logprobs.shape:
            raise ValueError(
                f"`importance_weights` must match `pi_logprobs` {tuple(pi_logprobs.shape)}. Got "
                f"{tuple(importance_weights.shape)}."
            )
        per_token_loss = per_token_loss * importance_weights.detach()  # [N, L]
    kl = None
    if ref_logprobs is not None:
        kl = k3_kl(pi_logprobs, ref_logprobs.detach())  # [N, L]
        if beta > 0.0:
            per_token_loss = per_token_loss + beta * kl  # [N, L]
        kl = kl.detach()  # [N, L]
    ratio = ratio.detach()  # [N, L]
    is_low_clipped = (ratio < 1.0 - epsilon_low) & (adv < 0)  # [N, L]
    is_high_clipped = (ratio > 1.0 + eps_high) & (adv > 0)  # [N, L]
    return GRPOTokenLoss(
        per_token_loss=per_token_loss,
        ratio=ratio,
        is_clipped=is_low_clipped | is_high_clipped,
        is_low_clipped=is_low_clipped,
        is_high_clipped=is_high_clipped,
        kl=kl,
    )
