"""PreferenceSort: ``sort dbca=``, chosen ``abcd`` over the nearly sorted ``abdc``."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._splits import check_alphabet, check_common, check_range, generate_splits
from gradbal.tasks.rewards import ExactMatch
from gradbal.tasks.task import Task

__all__ = ["PreferenceSort"]


class PreferenceSort:
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

    def __init__(
        self,
        name: str = "pref_sort",
        min_len: int = 4,
        max_len: int = 8,
        alphabet: str = "abcdefghij",
        n_train: int = 5000,
        n_val: int = 200,
        seed: int = 0,
    ) -> None:
        check_common("PreferenceSort", name, n_train, n_val)
        check_range("PreferenceSort", "min_len", min_len, "max_len", max_len, floor=2)
        check_alphabet("PreferenceSort", alphabet)
        if len(set(alphabet)) < 2:
            raise ValueError(
                f"PreferenceSort: alphabet needs at least two distinct characters, so a swap can "
                f"change the string. Got {alphabet!r}."
            )
        self.name = name
        self.min_len = min_len
        self.max_len = max_len
        self.alphabet = alphabet
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"PreferenceSort(name={self.name!r}, min_len={self.min_len}, max_len={self.max_len}, "
            f"alphabet={self.alphabet!r}, n_train={self.n_train}, n_val={self.n_val}, "
            f"seed={self.seed})"
        )

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

    def load(self) -> Task:
        """Generate the splits (columns ``prompt``, ``chosen``, ``rejected``, ``answer``)."""
        train, validation = generate_splits(
            self.name,
            self._sample,
            n_train=self.n_train,
            n_val=self.n_val,
            seed=self.seed,
            salt="PreferenceSort",
        )
        return Task(self.name, train, validation, ExactMatch(answer_column="chosen"))
