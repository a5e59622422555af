"""Masked reductions shared by every objective: padding never reaches a loss or a statistic."""

from __future__ import annotations

import torch
from torch import Tensor


def _as_bool_mask(x: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != x.shape:
        raise ValueError(
            f"`mask` must have the same shape as `x`. Got mask {tuple(mask.shape)} and "
            f"x {tuple(x.shape)}. Pass the padding mask of the tensor being reduced, e.g. the "
            "[N, L] completion mask for [N, L] per-token values."
        )
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_complex:
        raise TypeError(
            f"`mask` must be a bool or 0/1 numeric tensor. Got dtype {mask.dtype}. "
            "Convert it with `mask.bool()`."
        )
    return mask != 0


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum ``x`` over the positions where ``mask`` is set.

    Masked positions are replaced by zero (not multiplied by it), so ``inf``/``nan`` in padding
    does not leak into the result.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``; bool, or 0/1 numbers (non-zero counts as set).
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        ``x`` summed over the kept positions, with ``dim`` removed (a scalar when ``dim=None``).

    Raises:
        ValueError: If ``mask`` and ``x`` differ in shape.
        TypeError: If ``mask`` is neither bool nor numeric.

    Example::

        >>> x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]])
        >>> mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
        >>> masked_sum(x, mask, dim=1)
        tensor([3., 0.])
    """
    kept = _as_bool_mask(x, mask)  # [...]
    zeroed = torch.where(kept, x, torch.zeros((), dtype=x.dtype, device=x.device))  # [...]
    return zeroed.sum() if dim is None else zeroed.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set; 0 where nothing is set.

    A fully masked row (or a fully masked tensor when ``dim=None``) gives 0, not ``nan``, and
    its gradient is 0 too: the count is clamped to at least 1, which is exact for 0/1 masks.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``; bool, or 0/1 numbers (non-zero counts as set).
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The masked mean, with ``dim`` removed (a scalar when ``dim=None``).

    Raises:
        ValueError: If ``mask`` and ``x`` differ in shape.
        TypeError: If ``mask`` is neither bool nor numeric.

    Example::

        >>> x = torch.tensor([[1.0, 2.0, 9.0], [4.0, 5.0, 6.0]])
        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> masked_mean(x, mask, dim=1)
        tensor([1.5000, 0.0000])
        >>> masked_mean(x, mask)
        tensor(1.5000)
    """
    kept = _as_bool_mask(x, mask)  # [...]
    total = masked_sum(x, kept, dim=dim)  # [...] without dim
    count = kept.sum() if dim is None else kept.sum(dim=dim)  # [...] without dim, int64
    return total / count.clamp(min=1).to(total.dtype)  # [...] without dim
