"""PreferenceFormat: ``rec ab 42=``, chosen ``{ab:42}`` over a malformed record such as ``{ab:42``."""

from __future__ import annotations

import random
import string
from typing import Any

from gradbal.tasks.builtin._splits import check_common, check_range, generate_splits
from gradbal.tasks.rewards import ExactMatch
from gradbal.tasks.task import Task

__all__ = ["PreferenceFormat"]

_MALFORMED = (
    "{{{k}:{v}",  # no closing brace
    "{k}:{v}}}",  # no opening brace
    "{{{k}{v}}}",  # no colon
    "({k}:{v}}}",  # mismatched brackets
    "{{{k}::{v}}}",  # doubled colon
    "{{{k}:{v}}}}}",  # extra closing brace
)


class PreferenceFormat:
    """Well-formed over malformed output. Prompt ``rec {key} {value}=``, chosen ``{key:value}``,
    rejected the same record with one structural error (a brace or the colon missing, doubled
    or wrong).

    The error is in the format, not the content, so the completion alone decides (the easiest
    of the built-in preference tasks). Reward (for generated completions): exact match with
    ``chosen``.

    Args:
        name: Task name.
        min_key_len: Shortest key (lower-case letters).
        max_key_len: Longest key.
        max_value: Values are integers in ``[0, max_value]``.
        n_train: Number of train pairs.
        n_val: Number of validation pairs (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: On a malformed name, sizes < 1, bad key lengths or ``max_value < 0``.

    Example::

        >>> task = PreferenceFormat(n_train=3, n_val=2).load()
        >>> task.validation[0]
        {'prompt': 'rec vszr 6=', 'chosen': '{vszr:6}', 'rejected': '{vszr6}', 'answer': '{vszr:6}'}
    """

    def __init__(
        self,
        name: str = "pref_format",
        min_key_len: int = 2,
        max_key_len: int = 4,
        max_value: int = 99,
        n_train: int = 5000,
        n_val: int = 200,
        seed: int = 0,
    ) -> None:
        check_common("PreferenceFormat", name, n_train, n_val)
        check_range("PreferenceFormat", "min_key_len", min_key_len, "max_key_len", max_key_len, 1)
        if max_value < 0:
            raise ValueError(f"PreferenceFormat: max_value must be >= 0. Got {max_value!r}.")
        self.name = name
        self.min_key_len = min_key_len
        self.max_key_len = max_key_len
        self.max_value = max_value
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"PreferenceFormat(name={self.name!r}, min_key_len={self.min_key_len}, "
            f"max_key_len={self.max_key_len}, max_value={self.max_value}, "
            f"n_train={self.n_train}, n_val={self.n_val}, seed={self.seed})"
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        length = rng.randint(self.min_key_len, self.max_key_len)
        key = "".join(rng.choices(string.ascii_lowercase, k=length))
        value = rng.randint(0, self.max_value)
        chosen = f"{{{key}:{value}}}"
        rejected = rng.choice(_MALFORMED).format(k=key, v=value)
        return {
            "prompt": f"rec {key} {value}=",
            "chosen": chosen,
            "rejected": rejected,
            "answer": chosen,
        }

    def load(self) -> Task:
        """Generate the splits (columns ``prompt``, ``chosen``, ``rejected``, ``answer``)."""
        train, validation = generate_splits(
            self.name,
            self._sample,
            n_train=self.n_train,
            n_val=self.n_val,
            seed=self.seed,
            salt="PreferenceFormat",
        )
        return Task(self.name, train, validation, ExactMatch(answer_column="chosen"))
