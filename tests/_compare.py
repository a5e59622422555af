"""Comparing saved states in tests: nested dicts, lists and tensors, NaN equal to NaN."""

from __future__ import annotations

import math
from typing import Any

import torch


def same_state(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are equal, recursively, with NaN equal to NaN.

    A restored state's NaNs are new float objects and ``[nan] == [nan]`` only holds for the
    very same object, so resume tests need this rather than ``==``. Tensors must have the same
    shape, dtype and values (bit for bit, NaN where the other has NaN).

    Example::

        >>> same_state({"v": [float("nan"), 1.0]}, {"v": [float("nan"), 1.0]})
        True
        >>> same_state(torch.tensor([1.0]), torch.tensor([1.0, 1.0]))
        False
    """
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and (
                torch.equal(a, b) or bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
            )
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
