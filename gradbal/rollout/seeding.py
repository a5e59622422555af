"""Seeded sampling: the same seed draws the same tokens, and the global RNG is left as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads nearby seeds apart


def mix_seed(seed: int, step: int, rank: int, micro_batch: int = 0) -> int:
    """One seed from ``(seed, step, rank, micro_batch)``, distinct for nearby values.

    Example::

        >>> mix_seed(7, 3, 0) == mix_seed(7, 3, 0) != mix_seed(7, 4, 0)
        True
    """
    return (seed * _MIX + step * 1_000_003 + rank * 7919 + micro_batch * 15_485_863) % (2**63 - 1)


@contextmanager
def seeded_rng(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run the body with torch's RNG (CPU, and ``device``'s if CUDA) seeded by ``seed``.

    The RNG state is restored afterwards. ``seed=None``: the body uses the global RNG as it is.
    """
    if seed is None:
        yield
        return
    on_cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if on_cuda else []):
        torch.manual_seed(seed)
        yield
