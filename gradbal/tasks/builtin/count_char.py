"""CountChar: ``count a in abacad=`` -> ``3``; count one letter in a string, exact answer."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import (
    check_alphabet,
    check_range,
)
from gradbal.tasks.rewards import ExactMatch

__all__ = ["CountChar"]


@dataclass(eq=False)
class CountChar(GeneratedTask):
    """Count a letter in a random string. Prompt ``count {c} in {s}=``, answer ``str(s.count(c))``.

    The string's length is uniform in ``[min_len, max_len]``, its characters and the counted
    letter are drawn uniformly from ``alphabet`` (so the count may be 0). A smaller alphabet
    gives larger counts. Reward: :class:`~gradbal.tasks.ExactMatch` (1.0 or 0.0).

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
            distinct problems for ``n_val``.

    Example::

        >>> task = CountChar(n_train=3, n_val=2).load()
        >>> task.validation[1]
        {'prompt': 'count d in cabace=', 'answer': '0'}
        >>> task.reward(["count d in cabace="] * 2, ["0\\n", "1\\n"], answer=["0", "0"])
        [1.0, 0.0]
    """

    name: str = "count"
    min_len: int = 3
    max_len: int = 8
    alphabet: str = "abcde"
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range("CountChar", "min_len", self.min_len, "max_len", self.max_len, floor=1)
        check_alphabet("CountChar", self.alphabet)

    def _reward(self) -> ExactMatch:
        return ExactMatch()

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        text = "".join(rng.choices(self.alphabet, k=rng.randint(self.min_len, self.max_len)))
        letter = rng.choice(self.alphabet)
        return {"prompt": f"count {letter} in {text}=", "answer": str(text.count(letter))}
