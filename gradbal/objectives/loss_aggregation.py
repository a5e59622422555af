"""Ways to turn per-token losses into each sequence's additive share of the batch loss.

Each aggregation returns ``shares [N]`` with ``shares.sum()`` equal to the loss of the matching TRL
``GRPOConfig.loss_type``. The normaliser of every share depends only on the mask and on constants,
never on other rows' losses, so ``shares[rows].sum()`` is exactly those rows' part of the loss and
of its gradient (what ``gradbal.types.TaskLosses`` needs to split an update by task).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from gradbal.objectives._masking import _as_bool_mask, masked_mean, masked_sum


class LossAggregation(ABC):
    """Maps ``per_token_loss [N, L]`` and its mask to each sequence's share ``[N]`` of the loss.

    The type a module takes as its ``loss_aggregation`` argument; YAML picks the class with
    ``class_path``.

    Example::

        >>> aggregation: LossAggregation = DAPOAggregation()
        >>> shares = aggregation(torch.ones(2, 3), torch.ones(2, 3), max_completion_length=3)
        >>> shares, shares.sum()  # the sum is the loss to backpropagate
        (tensor([0.5000, 0.5000]), tensor(1.))
    """

    #: The loss is a token mean over the optimiser step's whole global batch (every
    #: accumulated micro-batch on every rank): the module passes ``global_num_tokens`` and
    #: rescales the accumulated gradient once the step's token count is known
    #: (:class:`gradbal.objectives.token_window.TokenWindow`). ``False``: each micro-batch is
    #: normalised on its own and ``global_num_tokens`` is ``None``.
    global_token_mean: bool = False

    @abstractmethod
    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int,
        global_num_tokens: float | Tensor | None = None,
    ) -> Tensor:
        """Return ``[N]`` shares whose sum is the batch loss.

        Args:
            per_token_loss: ``[N, L]`` per-token losses (padding may hold anything).
            mask: ``[N, L]`` bool or 0/1, the completion tokens that count.
            max_completion_length: Generation's max new tokens (used by constant normalisers).
            global_num_tokens: Active tokens per data-parallel rank, averaged over ranks (used
                by global token normalisers).
        """
        ...


def _active(per_token_loss: Tensor, mask: Tensor, max_completion_length: int) -> Tensor:
    if per_token_loss.dim() != 2:
        raise ValueError(
            f"`per_token_loss` must be [N, L]. Got shape {tuple(per_token_loss.shape)}. Pass "
            "the unreduced output of e.g. `grpo_token_loss(...).per_token_loss`."
        )
    if max_completion_length < 1:
        raise ValueError(
            f"`max_completion_length` must be >= 1. Got {max_completion_length}. Pass the "
            "generation's max new tokens."
        )
    return _as_bool_mask(per_token_loss, mask)  # [N, L]


class GRPOAggregation(LossAggregation):
    """Token mean per sequence, then mean over sequences: ``share_i = mean_t(l_i) / N``.

    DeepSeekMath's GRPO objective (Shao et al., 2024, arXiv:2402.03300, eq. 3: ``1/G sum_i
    1/|o_i| sum_t``); TRL ``loss_type="grpo"``. Favours short sequences per token, the length
    bias Dr. GRPO points out. A fully masked row gets share 0 (still counted in ``N``).

    Example::

        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
        >>> GRPOAggregation()(loss, mask, max_completion_length=3)  # [2/2, 4/2]
        tensor([1., 2.])
    """

    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int,
        global_num_tokens: float | Tensor | None = None,
    ) -> Tensor:
        kept = _active(per_token_loss, mask, max_completion_length)  # [N, L]
        return masked_mean(per_token_loss, kept, dim=1) / per_token_loss.shape[0]  # [N]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DrGRPOAggregation(LossAggregation):
    """Constant normaliser: ``share_i = sum_t(l_i) / (N * max_completion_length)``.

    Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783), which
    removes GRPO's ``1/|o_i|`` length bias; TRL ``loss_type="dr_grpo"``.

    Raises:
        ValueError: When called with ``L > max_completion_length`` (the constant would no
            longer bound the sequence length, so the configured value is wrong).

    Example::

        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
        >>> DrGRPOAggregation()(loss, mask, max_completion_length=4)  # [6/8, 4/8]
        tensor([0.7500, 0.5000])
    """

    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int,
        global_num_tokens: float | Tensor | None = None,
    ) -> Tensor:
        kept = _active(per_token_loss, mask, max_completion_length)  # [N, L]
        num_seqs, length = per_token_loss.shape
        if length > max_completion_length:
            raise ValueError(
                f"`per_token_loss` has {length} completion positions, more than "
                f"max_completion_length={max_completion_length}. Pass the generation's real "
                "max new tokens, or trim the completion tensors to it."
            )
        return masked_sum(per_token_loss, kept, dim=1) / (num_seqs * max_completion_length)  # [N]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BNPOAggregation(LossAggregation):
    """Token mean over the local batch: ``share_i = sum_t(l_i) / (active tokens in the batch)``.

    TRL ``loss_type="bnpo"`` (normalised by the active tokens of the local batch). Under DDP each
    rank divides by its own count, so ranks with fewer tokens weigh more per token; use
    :class:`DAPOAggregation` for a global token mean.

    Example::

        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
        >>> BNPOAggregation()(loss, mask, max_completion_length=3)  # [6/4, 4/4]
        tensor([1.5000, 1.0000])
    """

    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int,
        global_num_tokens: float | Tensor | None = None,
    ) -> Tensor:
        kept = _active(per_token_loss, mask, max_completion_length)  # [N, L]
        num_tokens = kept.sum().clamp(min=1).to(per_token_loss.dtype)  # []
        return masked_sum(per_token_loss, kept, dim=1) / num_tokens  # [N]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DAPOAggregation(LossAggregation):
    """Token mean over the global batch: ``share_i = sum_t(l_i) / global_num_tokens``.

    DAPO's token-level policy-gradient loss (Yu et al., 2025, arXiv:2503.14476, Sec. 3.3:
    ``1 / sum_i |o_i|``); TRL ``loss_type="dapo"``, whose normaliser is the active-token count of
    the whole generation batch (all accumulated micro-batches, all processes) divided by the
    number of processes. The caller passes ``global_num_tokens``, the divisor of this batch's
    summed token losses: for ``W`` ranks and ``K`` accumulated micro-batches with ``N`` active
    tokens in all, ``N / (W * K)`` gives every token the gradient weight ``1 / N`` (Lightning
    scales each micro-batch loss by ``1 / K``, DDP averages over ranks). ``GRPOModule`` passes
    a provisional divisor and corrects the accumulated gradient before the optimiser step, see
    :class:`gradbal.objectives.token_window.TokenWindow`. Without it (``None``) the local count
    is used, which equals :class:`BNPOAggregation`.

    Raises:
        ValueError: When called with a ``global_num_tokens`` float that is not > 0.

    Example::

        >>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
        >>> DAPOAggregation()(loss, mask, max_completion_length=3, global_num_tokens=5.0)
        tensor([1.2000, 0.8000])
    """

    global_token_mean = True

    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int,
        global_num_tokens: float | Tensor | None = None,
    ) -> Tensor:
        kept = _active(per_token_loss, mask, max_completion_length)  # [N, L]
        if global_num_tokens is None:
            num_tokens: float | Tensor = kept.sum().clamp(min=1).to(per_token_loss.dtype)  # []
        elif isinstance(global_num_tokens, torch.Tensor):
            num_tokens = global_num_tokens.detach()  # [] ; not checked: that would sync the GPU
        elif global_num_tokens > 0:
            num_tokens = global_num_tokens
        else:
            raise ValueError(
                f"`global_num_tokens` must be > 0. Got {global_num_tokens}. Pass the all-reduced "
                "active-token count divided by the world size, or None for the local count."
            )
        return masked_sum(per_token_loss, kept, dim=1) / num_tokens  # [N]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
