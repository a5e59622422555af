"""Seeded generation of disjoint train/validation splits, shared by the built-in tasks."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import datasets

_NAME = re.compile(r"[a-z0-9_]+")

# Rejection sampling gives up after this many draws per requested row (plus a constant), so a
# problem space too small for the requested sizes fails fast instead of looping forever.
_DRAWS_PER_ROW = 50


def check_common(cls: str, name: str, n_train: int, n_val: int) -> None:
    """Validate the arguments every generated task has, with how-to-fix messages."""
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"{cls}: name must match [a-z0-9_]+. Got {name!r}.")
    for arg, value in (("n_train", n_train), ("n_val", n_val)):
        if value < 1:
            raise ValueError(f"{cls}({name!r}): {arg} must be >= 1. Got {value!r}.")


def check_range(cls: str, low_name: str, low: int, high_name: str, high: int, floor: int) -> None:
    """Check ``floor <= low <= high``."""
    if not floor <= low <= high:
        raise ValueError(
            f"{cls}: need {floor} <= {low_name} <= {high_name}. "
            f"Got {low_name}={low!r}, {high_name}={high!r}."
        )


def check_alphabet(cls: str, alphabet: str) -> None:
    """The alphabet must be non-empty and free of characters that delimit prompts."""
    bad = sorted({c for c in alphabet if c.isspace() or c in "=>"})
    if not alphabet or bad:
        raise ValueError(
            f"{cls}: alphabet must be a non-empty string without whitespace, '=' or '>', which "
            f"delimit the prompt. Got {alphabet!r}."
        )


def generate_splits(
    name: str,
    sample: Callable[[random.Random], dict[str, Any]],
    *,
    n_train: int,
    n_val: int,
    seed: int,
    salt: str,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Draw ``n_val`` distinct validation rows, then ``n_train`` train rows with unseen prompts.

    Each split has its own RNG derived from ``seed`` and ``salt``, so changing ``n_train`` leaves
    the validation split unchanged, and two task kinds with one seed draw different numbers. Train rows may repeat each other (small problem spaces), but no
    train prompt is a validation prompt.

    Args:
        name: Task name, for error messages.
        sample: Draws one row (``prompt``, ``answer`` and extra columns) from the RNG.
        n_train: Number of train rows.
        n_val: Number of validation rows.
        seed: Base seed.
        salt: Distinguishes task kinds, e.g. the class name.

    Returns:
        ``(train, validation)`` datasets.

    Raises:
        ValueError: If the problem space is too small to fill the splits.
    """
    # String seeds are hashed with SHA-512 by `random`, so they are stable across processes.
    val_rng = random.Random(f"{salt}:{seed}:validation")
    val_rows: dict[str, dict[str, Any]] = {}
    for _ in range(_DRAWS_PER_ROW * n_val + 1000):
        if len(val_rows) == n_val:
            break
        row = sample(val_rng)
        val_rows.setdefault(row["prompt"], row)
    if len(val_rows) < n_val:
        raise ValueError(
            f"Task {name!r}: could only generate {len(val_rows)} distinct validation prompts, "
            f"fewer than n_val={n_val}; the problem space is too small. Lower n_val or make the "
            f"task larger (more digits, longer strings, a bigger alphabet)."
        )
    train_rng = random.Random(f"{salt}:{seed}:train")
    train_rows: list[dict[str, Any]] = []
    for _ in range(_DRAWS_PER_ROW * n_train + 1000):
        if len(train_rows) == n_train:
            break
        row = sample(train_rng)
        if row["prompt"] not in val_rows:
            train_rows.append(row)
    if len(train_rows) < n_train:
        raise ValueError(
            f"Task {name!r}: the validation split (n_val={n_val}) covers almost every possible "
            f"prompt, so train prompts cannot avoid it. Lower n_val or make the task larger."
        )
    return datasets.Dataset.from_list(train_rows), datasets.Dataset.from_list(
        list(val_rows.values())
    )
