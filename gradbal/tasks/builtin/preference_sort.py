"""PreferenceSort: ``sort dbca=``, chosen ``abcd`` over the nearly sorted ``abdc``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_alphabet, check_range
from gradbal.tasks.rewards import ExactMatch

__all__ = ["PreferenceSort"]


@dataclass(eq=False)
class PreferenceSort(GeneratedTask):
    """Sorted over nearly sorted. Prompt ``sort {s}=`` (as :class:`~gradbal.tasks.Sort`), chosen
    ``"".join(sorted(s))``, rejected the sorted string with one adjacent pair of different
    characters swapped.

    The two completions share every character and differ in the order of two neighbours; the
    rejected one has a descent, so the completion alone decides, but only at one position
    (medium difficulty). Reward (for generated completions): exact match with ``chosen``.

    Args:
        name: Task name.
        min_len: Shortest string, >= 2.
        max_len: Longest string.
        alphabet: Characters to draw from (at least two; no whitespace, ``=`` or ``>``).
        n_train: Number of train pairs.
        n_val: Number of validation pairs (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: On a malformed name, sizes < 1, ``2 <= min_len <= max_len`` failing or an
            alphabet with fewer than two characters.

    Example::

        >>> task = PreferenceSort(n_train=3, n_val=2).load()
        >>> task.validation[0]
        {'prompt': 'sort gagbch=', 'chosen': 'abcggh', 'rejected': 'bacggh', 'answer': 'abcggh'}
    """

    name: str = "pref_sort"
    min_len: int = 4
    max_len: int = 8
    alphabet: str = "abcdefghij"
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range("PreferenceSort", "min_len", self.min_len, "max_len", self.max_len, floor=2)
        check_alphabet("PreferenceSort", self.alphabet)
        if len(set(self.alphabet)) < 2:
            raise ValueError(
                f"PreferenceSort: alphabet needs at least two distinct characters, so a swap can "
                f"change the string. Got {self.alphabet!r}."
            )

    def _reward(self) -> ExactMatch:
        return ExactMatch(answer_column="chosen")

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        while True:
            text = "".join(rng.choices(self.alphabet, k=rng.randint(self.min_len, self.max_len)))
            chosen = "".join(sorted(text))
            swaps = [i for i in range(len(chosen) - 1) if chosen[i] != chosen[i + 1]]
            if swaps:
                break
        i = rng.choice(swaps)
        rejected = chosen[:i] + chosen[i + 1] + chosen[i] + chosen[i + 2 :]
        return {"prompt": f"sort {text}=", "chosen": chosen, "rejected": rejected, "answer": chosen}
