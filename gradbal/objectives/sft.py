"""Supervised fine-tuning loss: token-mean negative log-likelihood, split into per-sequence shares."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gradbal.objectives._masking import _as_bool_mask, masked_mean, masked_sum


class SFTLoss(NamedTuple):
    """Output of :func:`sft_loss`.

    Attributes:
        losses: ``[N]`` each sequence's share of the batch's token-mean NLL, in the autograd
            graph; ``losses.sum()`` is the token-mean NLL over all target tokens of the batch.
        token_nll_mean: ``[N]`` detached mean NLL per token of each sequence (0 for a sequence
            without target tokens); for logging perplexity per task.

    Example::

        >>> out = sft_loss(torch.full((2, 3), -1.0), torch.ones(2, 3))
        >>> out.losses, out.token_nll_mean
        (tensor([0.5000, 0.5000]), tensor([1., 1.]))
    """

    losses: Tensor
    token_nll_mean: Tensor


def sft_loss(token_logprobs: Tensor, mask: Tensor) -> SFTLoss:
    """Token-mean NLL ``-sum_{i,t} m_it lp_it / sum_{i,t} m_it``, as per-sequence shares.

    The standard causal-LM cross-entropy with ``reduction="mean"`` over non-ignored tokens (what
    ``torch.nn.functional.cross_entropy(..., ignore_index=-100)`` and Hugging Face
    ``ForCausalLMLoss`` compute on one device), written as ``losses[i] = -sum_t m_it lp_it / T``
    with ``T`` the batch's target-token count, so ``losses[rows].sum()`` is those rows' exact part
    of the loss. ``T`` is this batch's count: under DDP each rank normalises by its own tokens.

    Args:
        token_logprobs: ``[N, L]`` log-probs of the target tokens, e.g. from
            :func:`~gradbal.objectives.token_logprobs`.
        mask: ``[N, L]`` bool or 0/1, the target tokens (1) vs prompt and padding (0).

    Returns:
        An :class:`SFTLoss`.

    Raises:
        ValueError: If ``token_logprobs`` is not 2-D or ``mask`` has another shape.

    Example::

        >>> lp = torch.log(torch.tensor([[0.5, 0.5, 0.1], [0.25, 1.0, 1.0]]))
        >>> mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
        >>> out = sft_loss(lp, mask)  # T = 3 target tokens
        >>> out.losses  # [2 log 2 / 3, 2 log 2 / 3]
        tensor([0.4621, 0.4621])
        >>> out.token_nll_mean  # [log 2, log 4]
        tensor([0.6931, 1.3863])
    """
    if token_logprobs.dim() != 2:
        raise ValueError(
            f"`token_logprobs` must be [N, L]. Got shape {tuple(token_logprobs.shape)}. Pass "
            "per-token log-probs, e.g. `token_logprobs(logits, labels)`."
        )
    kept = _as_bool_mask(token_logprobs, mask)  # [N, L]
    nll = -token_logprobs  # [N, L]
    num_tokens = kept.sum().clamp(min=1).to(nll.dtype)  # []
    losses = masked_sum(nll, kept, dim=1) / num_tokens  # [N]
    with torch.no_grad():
        token_nll_mean = masked_mean(nll, kept, dim=1)  # [N]
    return SFTLoss(losses=losses, token_nll_mean=token_nll_mean)
