"""Addition: ``add 12+34=`` -> ``46``; a short exact answer with a sparse reward."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import ExactMatch

__all__ = ["Addition"]


def _operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    digits = rng.randint(min_digits, max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


@dataclass(eq=False)
class Addition(GeneratedTask):
    """Add two non-negative integers. Prompt ``add {a}+{b}=``, answer ``str(a + b)``.

    Each operand first draws its number of digits uniformly from
    ``[min_digits, max_digits]``, then a number with that many digits. Reward:
    :class:`~gradbal.tasks.ExactMatch` (1.0 or 0.0).

    Args:
        name: Task name.
        min_digits: Fewest digits per operand (difficulty knob).
        max_digits: Most digits per operand (difficulty knob).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: If ``name`` is malformed, sizes are < 1 or ``1 <= min_digits <= max_digits``
            does not hold; in :meth:`load`, if there are too few distinct problems for ``n_val``.

    Example::

        >>> task = Addition(n_train=3, n_val=2).load()
        >>> task.validation[1]
        {'prompt': 'add 21+5=', 'answer': '26'}
        >>> task.reward(["add 21+5="] * 2, ["26\\n", "25\\n"], answer=["26", "26"])
        [1.0, 0.0]
    """

    name: str = "addition"
    min_digits: int = 1
    max_digits: int = 2
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range(
            "Addition", "min_digits", self.min_digits, "max_digits", self.max_digits, floor=1
        )

    def _reward(self) -> ExactMatch:
        return ExactMatch()

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = _operand(rng, self.min_digits, self.max_digits)
        b = _operand(rng, self.min_digits, self.max_digits)
        return {"prompt": f"add {a}+{b}=", "answer": str(a + b)}
