"""Group-relative advantages for GRPO: each completion's reward against its prompt's group."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["group", "batch", "none"]
_SCALES = ("group", "batch", "none")


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(
            f"`rewards` must be 1-D [N] (N = prompts x group_size). Got shape "
            f"{tuple(rewards.shape)}. Flatten it with `rewards.reshape(-1)`, keeping each "
            "prompt's completions contiguous."
        )
    if group_size < 1:
        raise ValueError(
            f"`group_size` must be >= 1. Got {group_size}. Pass the number of completions "
            "sampled per prompt."
        )
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"The number of rewards must be a multiple of `group_size`. Got {rewards.numel()} "
            f"rewards and group_size={group_size}. Each prompt's {group_size} completions must be "
            "contiguous in `rewards`."
        )
    return rewards.view(-1, group_size)  # [B, G]


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: AdvantageScale = "group",
    eps: float = 1e-4,
    batch_std: Tensor | None = None,
) -> Tensor:
    """Group-relative advantages ``A_i = (r_i - mean_group(r)) / (std + eps)``.

    DeepSeekMath (Shao et al., 2024, arXiv:2402.03300), Sec. 4.1.2 "outcome supervision":
    ``A_i = (r_i - mean(r)) / std(r)`` over the ``G`` completions of one prompt. ``scale``
    picks the denominator, matching TRL ``GRPOConfig.scale_rewards``:

    * ``"group"``: the group's std (DeepSeekMath; TRL ``"group"``).
    * ``"batch"``: one std over the whole batch (TRL ``"batch"``); the mean stays per group.
      The std of the ``N`` rewards passed in, or ``batch_std`` when given: pass the std of the
      rewards of every data-parallel rank, as TRL does after gathering them.
    * ``"none"``: no division (Dr. GRPO, Liu et al., 2025, arXiv:2503.20783).

    The std is the *unbiased* (Bessel-corrected, ``N - 1``) one, as ``torch.std``'s default and
    TRL use, so values match TRL's. ``eps`` is added to the std (not under a square root), as in
    TRL. A group whose rewards are all equal gets advantages of exactly 0 (see
    :func:`zero_std_groups`), whatever ``eps``.

    Rewards are grouped contiguously: ``rewards[k * G:(k + 1) * G]`` are prompt ``k``'s
    completions. With ``group_size=1`` every ``r_i - mean_group(r)`` is 0, so ``"batch"`` and
    ``"none"`` return zeros (allowed, and :func:`zero_std_groups` flags every group) while
    ``"group"`` raises because one sample has no std.

    Args:
        rewards: ``[N]`` rewards, ``N = B * group_size``.
        group_size: Completions per prompt ``G``.
        scale: Which std divides the centred rewards.
        eps: Added to the std to avoid dividing by zero.
        batch_std: ``[]`` the batch std for ``scale="batch"`` (e.g. over all ranks' rewards);
            ``None``: the unbiased std of ``rewards``. Ignored for the other scales.

    Returns:
        ``[N]`` advantages in ``rewards.dtype``, detached from any graph.

    Raises:
        ValueError: If ``rewards`` is not 1-D, ``group_size < 1``, ``N`` is not a multiple of
            ``group_size``, ``scale`` is unknown, ``eps < 0``, or the std is undefined
            (``"group"`` with ``group_size=1``; ``"batch"`` with ``N=1``).

    Example::

        >>> rewards = torch.tensor([0.0, 1.0, 1.0, 1.0])  # two prompts, two completions each
        >>> group_advantages(rewards, group_size=2, scale="none")
        tensor([-0.5000,  0.5000,  0.0000,  0.0000])
        >>> group_advantages(rewards, group_size=2)  # / (std([0, 1]) + 1e-4) = / 0.7072
        tensor([-0.7070,  0.7070,  0.0000,  0.0000])
    """
    if scale not in _SCALES:
        raise ValueError(f"`scale` must be one of {_SCALES}. Got {scale!r}.")
    if eps < 0:
        raise ValueError(f"`eps` must be >= 0. Got {eps}. Use a small positive value like 1e-4.")
    grouped = _grouped(rewards.detach(), group_size)  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        if group_size == 1:
            raise ValueError(
                "scale='group' needs group_size >= 2: the std of a single reward is undefined. "
                "Got group_size=1. Note that with one completion per prompt the group-mean "
                "baseline already makes every advantage 0 (scale='batch'/'none' would return "
                "zeros), so sample group_size >= 2 completions per prompt."
            )
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)  # [B, G]
    elif scale == "batch" and batch_std is not None:
        centred = centred / (batch_std.detach().to(centred.dtype) + eps)  # [B, G]
    elif scale == "batch":
        if rewards.numel() < 2:
            raise ValueError(
                f"scale='batch' needs at least 2 rewards to compute a std. Got {rewards.numel()}. "
                "Use a larger batch or scale='none'."
            )
        centred = centred / (grouped.std() + eps)  # [B, G]
    # Exact zeros for all-equal groups: the float mean of equal rewards can differ from them by
    # one ulp, which a tiny std would blow up (and 0 / 0 is nan when eps=0).
    constant = zero_std_groups(rewards, group_size).unsqueeze(1)  # [B, 1]
    return centred.masked_fill(constant, 0.0).reshape(-1)  # [N]


def zero_std_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Which groups have all-equal rewards, so all-zero advantages and no policy gradient.

    Equality is exact (``max == min``); DAPO's dynamic sampling (Yu et al., 2025,
    arXiv:2503.14476, Sec. 3.2) filters these groups out, and their fraction is logged as
    ``train/zero_std_frac``. A group of one (``group_size=1``) always counts as zero-std.

    Args:
        rewards: ``[N]`` rewards, prompt ``k``'s completions at ``[k * G:(k + 1) * G]``.
        group_size: Completions per prompt ``G``.

    Returns:
        ``[N // group_size]`` bool, ``True`` where the group's rewards are all equal.

    Raises:
        ValueError: If ``rewards`` is not 1-D, ``group_size < 1`` or ``N`` is not a multiple of
            ``group_size``.

    Example::

        >>> zero_std_groups(torch.tensor([0.0, 1.0, 1.0, 1.0]), group_size=2)
        tensor([False,  True])
    """
    grouped = _grouped(rewards.detach(), group_size)  # [B, G]
    return torch.eq(grouped.amax(dim=1), grouped.amin(dim=1))  # [B]
