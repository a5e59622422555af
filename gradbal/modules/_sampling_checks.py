"""Sampling settings refused up front: those under which every completion of a group is the same.

GRPO learns from the differences between a prompt's completions. Greedy-like sampling makes
them all equal, so every advantage is 0 and nothing is learned, silently.
"""

from __future__ import annotations

#: Below this temperature sampling is greedy for any real logit gap, and logits / temperature
#: can overflow half precision.
MIN_TEMPERATURE = 1e-3


def check_sampling(temperature: float, top_p: float, top_k: int | None) -> None:
    """Raise ValueError for a temperature, ``top_p`` or ``top_k`` that makes sampling greedy.

    ``temperature <= 0`` is left to the caller (its own message).

    Example::

        >>> check_sampling(1.0, 0.95, None)
        >>> check_sampling(1.0, 0.0, None)
        Traceback (most recent call last):
        ...
        ValueError: top_p must be in (0, 1], got 0.0. ...
    """
    if 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature={temperature:g} samples greedily: every completion of a group would be "
            f"the same, so every advantage is 0 and GRPO learns nothing (and logits / "
            f"temperature can overflow half precision). Use temperature >= {MIN_TEMPERATURE:g}; "
            f"GRPO usually samples at 0.7 to 1.0."
        )
    if not 0 < top_p <= 1:
        raise ValueError(
            f"top_p must be in (0, 1], got {top_p}. top_p=0 keeps only the most likely token, so "
            f"every completion of a group is the same and GRPO learns nothing. Use 1.0 (off, the "
            f"default) or e.g. 0.95."
        )
    if top_k is not None and top_k != 0 and top_k < 2:  # 0 is off, as in TRL and generate
        raise ValueError(
            f"top_k must be >= 2, or null / 0 (off), got {top_k}. top_k=1 keeps only the most "
            f"likely token, so every completion of a group is the same and GRPO learns nothing."
        )
