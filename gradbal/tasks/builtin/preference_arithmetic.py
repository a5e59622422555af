"""PreferenceArithmetic: ``add 12+34=``, chosen ``46`` over a near miss such as ``45`` or ``36``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.builtin.addition import _operand
from gradbal.tasks.rewards import ExactMatch

__all__ = ["PreferenceArithmetic"]


def _near_misses(a: int, b: int) -> list[int]:
    """Wrong sums a model plausibly writes: off by one, off by ten, the carry forgotten."""
    total = a + b
    no_carry = int(
        "".join(str((int(x) + int(y)) % 10) for x, y in zip(f"{a:09d}", f"{b:09d}", strict=True))
    )
    candidates = {total - 1, total + 1, total - 10, total + 10, no_carry}
    return sorted(c for c in candidates if c >= 0 and c != total)


@dataclass(eq=False)
class PreferenceArithmetic(GeneratedTask):
    """Right over wrong sums. Prompt ``add {a}+{b}=`` (as :class:`~gradbal.tasks.Addition`),
    chosen ``str(a + b)``, rejected a near miss: off by one or by ten, or the carry forgotten.

    Both completions are well-formed numbers, so the preference cannot be read from the
    completion alone: the model must relate it to the prompt (the hardest of the built-in
    preference tasks for a tiny model). Reward (for generated completions): exact match with
    ``chosen``.

    Args:
        name: Task name.
        min_digits: Fewest digits per operand.
        max_digits: Most digits per operand.
        n_train: Number of train pairs.
        n_val: Number of validation pairs (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: On a malformed name, sizes < 1 or ``1 <= min_digits <= max_digits`` failing.

    Example::

        >>> task = PreferenceArithmetic(n_train=3, n_val=2).load()
        >>> task.validation[0]
        {'prompt': 'add 97+28=', 'chosen': '125', 'rejected': '124', 'answer': '125'}
    """

    name: str = "pref_add"
    min_digits: int = 1
    max_digits: int = 2
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range(
            "PreferenceArithmetic",
            "min_digits",
            self.min_digits,
            "max_digits",
            self.max_digits,
            floor=1,
        )

    def _reward(self) -> ExactMatch:
        return ExactMatch(answer_column="chosen")

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = _operand(rng, self.min_digits, self.max_digits)
        b = _operand(rng, self.min_digits, self.max_digits)
        chosen = str(a + b)
        rejected = str(rng.choice(_near_misses(a, b)))
        return {"prompt": f"add {a}+{b}=", "chosen": chosen, "rejected": rejected, "answer": chosen}
