"""An exact token mean over an accumulation window of micro-batches on data-parallel ranks.

DAPO's loss (TRL ``loss_type="dapo"``) divides the summed per-token losses of the whole
*generation batch* by its number of active tokens ``N``: with ``K`` accumulated micro-batches on
``W`` ranks, every token of the ``K * W`` micro-batches gets the gradient weight ``1 / N``. In
Lightning each micro-batch arrives in its own ``training_step`` and its loss is backpropagated at
once, before the later micro-batches' tokens are known, so ``N`` is not known in time.

Gradients are linear in the per-token weights, so the division can be deferred: every micro-batch
of the window divides by one *provisional* normaliser ``D`` (fixed at the window's first
micro-batch), and the accumulated gradient is multiplied once, before the optimiser step, by

    ``s = W * K * D / N``

(Lightning divides each micro-batch loss by ``K`` and DDP averages over ``W`` ranks). With
``D = max(n_0, 1) / W``, ``n_0`` the first micro-batch's active tokens summed over ranks, the
provisional loss is already the right one when all micro-batches have the same number of tokens,
and ``s = K * max(n_0, 1) / N`` is exactly 1 without accumulation (``K = 1``, ``N = n_0``).

Counts are all-reduced *sums* clamped afterwards: clamping a per-rank mean (``N / W``) at 1 gave a
wrong normaliser whenever the whole global batch had fewer active tokens than ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TokenWindow"]


class TokenWindow:
    """Token counts and losses of the micro-batches accumulated into one optimiser step.

    Call :meth:`normaliser` and :meth:`add` once per trained micro-batch (with its active-token
    count summed over ranks), read :meth:`rescale` and :meth:`step_loss` before the optimiser
    step, then :meth:`reset`.

    Args:
        world_size: data-parallel ranks ``W`` (DDP averages their gradients).
        accumulate: micro-batches per optimiser step ``K`` (Lightning divides each loss by it).

    Example::

        >>> window = TokenWindow(world_size=2, accumulate=2)
        >>> window.normaliser(torch.tensor(6.0))  # first micro-batch: 6 tokens on 2 ranks
        tensor(3.)
        >>> window.add(torch.tensor(6.0), torch.tensor(1.0))
        >>> window.normaliser(torch.tensor(2.0))  # the window keeps its normaliser
        tensor(3.)
        >>> window.add(torch.tensor(2.0), torch.tensor(0.5))
        >>> window.rescale()  # W * K * D / N = 2 * 2 * 3 / 8
        1.5
    """

    def __init__(self, world_size: int = 1, accumulate: int = 1) -> None:
        if world_size < 1 or accumulate < 1:
            raise ValueError(
                f"TokenWindow: world_size and accumulate must be >= 1. Got world_size="
                f"{world_size!r}, accumulate={accumulate!r}."
            )
        self.world_size = world_size
        self.accumulate = accumulate
        self.reset()

    def reset(self) -> None:
        """Start a new window (after each optimiser step)."""
        self._first: float | None = None  # max(n_0, 1): the window's first micro-batch
        self._normaliser: Tensor | None = None
        self._num_tokens = 0.0  # N: active tokens of the trained micro-batches, all ranks
        self._loss_sum: Tensor | None = None  # sum of this rank's micro-batch losses
        self.micro_batches = 0

    def normaliser(self, global_tokens: Tensor) -> Tensor:
        """``D``: the divisor of this micro-batch's summed token losses (the same for the window).

        Args:
            global_tokens: ``[]`` this micro-batch's active tokens summed over ranks.
        """
        if self._normaliser is None:
            first = global_tokens.detach().double().clamp(min=1.0)  # []
            self._first = float(first)
            self._normaliser = (first / self.world_size).to(torch.float32)
        return self._normaliser

    def add(self, global_tokens: Tensor, loss: Tensor) -> None:
        """Count a micro-batch that was trained (its loss backpropagated).

        Args:
            global_tokens: ``[]`` its active tokens summed over ranks.
            loss: ``[]`` the loss this rank returned for it (before Lightning's ``1 / K``).
        """
        self._num_tokens += float(global_tokens.detach())
        loss = loss.detach().double()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self.micro_batches += 1

    def rescale(self) -> float:
        """``s = W * K * D / N``, the factor that turns the accumulated gradient into the token
        mean's; 1.0 when nothing (or no token) was trained."""
        if self._first is None or self._num_tokens <= 0:
            return 1.0
        return self.accumulate * self._first / self._num_tokens

    def step_loss(self) -> Tensor | None:
        """``s / K`` times the sum of this rank's micro-batch losses (``None`` if none).

        Averaged over ranks this is the optimiser step's loss: ``sum_tokens l / N`` for a token
        mean, the mean of the micro-batch losses for a loss without a deferred normaliser.
        """
        if self._loss_sum is None:
            return None
        return (self._loss_sum * (self.rescale() / self.accumulate)).to(torch.float32)
