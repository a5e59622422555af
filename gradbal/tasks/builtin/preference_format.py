"""PreferenceFormat: ``rec ab 42=``, chosen ``{ab:42}`` over a malformed record such as ``{ab:42``."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import ExactMatch

__all__ = ["PreferenceFormat"]

_MALFORMED = (
    "{{{k}:{v}",  # no closing brace
    "{k}:{v}}}",  # no opening brace
    "{{{k}{v}}}",  # no colon
    "({k}:{v}}}",  # mismatched brackets
    "{{{k}::{v}}}",  # doubled colon
    "{{{k}:{v}}}}}",  # extra closing brace
)


@dataclass(eq=False)
class PreferenceFormat(GeneratedTask):
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

    name: str = "pref_format"
    min_key_len: int = 2
    max_key_len: int = 4
    max_value: int = 99
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range(
            "PreferenceFormat", "min_key_len", self.min_key_len, "max_key_len", self.max_key_len, 1
        )
        if self.max_value < 0:
            raise ValueError(f"PreferenceFormat: max_value must be >= 0. Got {self.max_value!r}.")

    def _reward(self) -> ExactMatch:
        return ExactMatch(answer_column="chosen")

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
