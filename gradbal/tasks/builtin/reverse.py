"""Reverse: ``rev abcde=`` -> ``edcba``; a longer output with a dense reward."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import (
    check_alphabet,
    check_range,
)
from gradbal.tasks.rewards import CharSimilarity

__all__ = ["Reverse"]


@dataclass(eq=False)
class Reverse(GeneratedTask):
    """Reverse a random string. Prompt ``rev {s}=``, answer ``s[::-1]``.

    The string's length is uniform in ``[min_len, max_len]`` and its characters are drawn
    uniformly, with replacement, from ``alphabet``. Reward: :class:`~gradbal.tasks.CharSimilarity`
    (dense, 1.0 only for the exact reversal).

    Args:
        name: Task name.
        min_len: Shortest string (difficulty knob).
        max_len: Longest string (difficulty knob).
        alphabet: Characters to draw from (no whitespace, ``=`` or ``>``).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: If an argument is out of range; in :meth:`load`, if there are too few
            distinct strings for ``n_val``.

    Example::

        >>> task = Reverse(n_train=3, n_val=2).load()
        >>> task.validation[1]
        {'prompt': 'rev gfhah=', 'answer': 'hahfg'}
        >>> task.reward(["rev gfhah="] * 2, ["hahfg\\n", "hahf"], answer=["hahfg"] * 2)
        [1.0, 0.8]
    """

    name: str = "reverse"
    min_len: int = 3
    max_len: int = 6
    alphabet: str = "abcdefghij"
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range("Reverse", "min_len", self.min_len, "max_len", self.max_len, floor=1)
        check_alphabet("Reverse", self.alphabet)

    def _reward(self) -> CharSimilarity:
        return CharSimilarity()

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        text = "".join(rng.choices(self.alphabet, k=rng.randint(self.min_len, self.max_len)))
        return {"prompt": f"rev {text}=", "answer": text[::-1]}
