"""Truncated importance sampling (TIS): correct the loss for a rollout engine's own sampler.

A rollout engine such as vLLM samples with its own kernels, so the distribution it drew a token
from (``engine_logprobs``) is not exactly the trainer's (``trainer_logprobs``, the policy's
log-probs under the weights that sampled the rollout). The policy-gradient estimate then needs an
importance weight ``pi_trainer / pi_engine`` per token, and truncated or masked weights keep its
variance bounded (Yao et al., 2025, "Your efficient RL framework secretly brings you off-policy
RL training"). TRL 1.16 applies this by default with vLLM (``vllm_importance_sampling_*``); the
modes and their meaning here are TRL's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from gradbal.objectives._masking import _as_bool_mask

#: ``<level>_<action>``: ``token`` weighs each token by its own ratio, ``sequence`` every token
#: of a completion by the completion's ratio (the product of its tokens'); ``truncate`` clamps a
#: ratio above ``cap`` to ``cap``, ``mask`` sets it to 0 (the token or completion is dropped).
TISMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


class TISWeights(NamedTuple):
    """Output of :func:`tis_weights`.

    Attributes:
        weights: ``[N, L]`` detached weights to multiply the per-token policy loss by (a
            sequence mode repeats the completion's weight on each of its tokens); 0 at padding.
        ratio: ``[N, L]`` the untruncated ratio ``exp(trainer - engine)`` the weights come from
            (per token, or the completion's ratio repeated on its tokens); 0 at padding.
        capped: ``[N, L]`` bool, the ratio exceeded ``cap`` (so the weight was truncated to
            ``cap``, or masked to 0); only at active positions.
    """

    weights: Tensor
    ratio: Tensor
    capped: Tensor


def tis_weights(
    trainer_logprobs: Tensor,
    engine_logprobs: Tensor,
    mask: Tensor,
    *,
    mode: TISMode = "sequence_mask",
    cap: float = 3.0,
) -> TISWeights:
    """Truncated importance weights of the rollout engine's samples, as TRL computes them.

    With ``d_t = trainer_logprobs_t - engine_logprobs_t`` on the active tokens (``mask``):

    * ``token_*``: ``r_t = exp(d_t)``;
    * ``sequence_*``: ``r_t = R = exp(sum_t d_t)`` for every token of the completion;
    * ``*_truncate``: ``w_t = min(r_t, cap)``; ``*_mask``: ``w_t = r_t if r_t <= cap else 0``.

    The loss then uses ``w_t * l_t`` for the policy term ``l_t`` (TRL multiplies the clipped
    surrogate, not the KL penalty). Both log-probs are treated as constants.

    Args:
        trainer_logprobs: ``[N, L]`` the trainer's log-probs of the sampled tokens under the
            weights that sampled them (TRL's ``old_per_token_logps``).
        engine_logprobs: ``[N, L]`` the engine's log-probs of the same tokens (TRL's
            ``sampling_per_token_logps``).
        mask: ``[N, L]`` bool or 0/1, the completion tokens that count.
        mode: see :data:`TISMode`; TRL's default is ``sequence_mask``.
        cap: the largest ratio kept, ``>= 1`` (TRL's default 3.0).

    Returns:
        A :class:`TISWeights`.

    Raises:
        ValueError: On mismatched shapes, an unknown ``mode`` or ``cap < 1``.

    Example::

        >>> trainer = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.9]]))
        >>> engine = torch.log(torch.tensor([[0.5, 0.25], [0.3, 0.9]]))  # ratios [1, 2], [3, 1]
        >>> mask = torch.tensor([[True, True], [True, False]])
        >>> tis_weights(trainer, engine, mask, mode="token_truncate", cap=2.5).weights
        tensor([[1.0000, 2.0000],
                [2.5000, 0.0000]])
        >>> out = tis_weights(trainer, engine, mask, mode="sequence_mask", cap=2.5)
        >>> out.weights, out.capped  # sequence ratios 2 and 3: the second is dropped
        (tensor([[2., 2.],
                [0., 0.]]), tensor([[False, False],
                [ True, False]]))
    """
    _validate(trainer_logprobs, engine_logprobs, mode, cap)
    active = _as_bool_mask(trainer_logprobs, mask)  # [N, L]
    zero = torch.zeros((), dtype=trainer_logprobs.dtype, device=trainer_logprobs.device)
    log_ratio = torch.where(active, trainer_logprobs.detach() - engine_logprobs.detach(), zero)
    if mode.startswith("sequence"):
        log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(log_ratio)  # [N, L]
    ratio = torch.where(active, torch.exp(log_ratio), zero)  # [N, L]
    capped = active & (ratio > cap)  # [N, L]
    if mode.endswith("truncate"):
        weights = torch.where(capped, torch.full_like(ratio, cap), ratio)  # [N, L]
    else:
        weights = torch.where(capped, zero, ratio)  # [N, L]
    return TISWeights(weights=weights, ratio=ratio, capped=capped)


def _validate(trainer: Tensor, engine: Tensor, mode: str, cap: float) -> None:
    if trainer.dim() != 2 or engine.shape != trainer.shape:
        raise ValueError(
            "`trainer_logprobs` and `engine_logprobs` must both be [N, L]. Got "
            f"{tuple(trainer.shape)} and {tuple(engine.shape)}. Pass the engine's "
            "`RolloutBatch.logprobs` for the same completion tokens."
        )
    if mode not in get_args(TISMode):
        raise ValueError(f"`mode` must be one of {list(get_args(TISMode))}. Got {mode!r}.")
    if not (math.isfinite(cap) and cap >= 1.0):
        raise ValueError(
            f"`cap` must be a finite number >= 1 (a ratio of 1 is no correction). Got {cap}. "
            "TRL's default is 3.0."
        )


@dataclass(frozen=True)
class TruncatedImportanceSampling:
    """The TIS correction a GRPO module applies: a :data:`TISMode` and its ``cap``.

    A YAML value of ``GRPOModule(importance_sampling=...)``; the default is TRL 1.16's
    (``vllm_importance_sampling_mode="sequence_mask"``, ``vllm_importance_sampling_cap=3.0``).
    See :func:`tis_weights` for the formula.

    Example::

        >>> tis = TruncatedImportanceSampling(mode="token_truncate", cap=2.0)
        >>> lp = torch.zeros(1, 2)
        >>> tis(lp, lp - 1.0, torch.ones(1, 2)).weights  # ratios e = 2.718 > 2: truncated
        tensor([[2., 2.]])
    """

    mode: TISMode = "sequence_mask"
    cap: float = 3.0

    def __post_init__(self) -> None:
        _validate(torch.zeros(1, 1), torch.zeros(1, 1), self.mode, self.cap)

    @property
    def per_token(self) -> bool:
        """``True`` for the ``token_*`` modes (each token has its own ratio)."""
        return self.mode.startswith("token")

    def __call__(
        self, trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor
    ) -> TISWeights:
        """:func:`tis_weights` with this mode and cap."""
        return tis_weights(trainer_logprobs, engine_logprobs, mask, mode=self.mode, cap=self.cap)
