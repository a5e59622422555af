"""Countdown: ``cd 3 5 7>22=`` -> ``3*5+7``; reach a target with ``+ - * /`` (the hard task)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import CountdownReward

__all__ = ["Countdown"]

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3
# Draws per row before giving up; only a very small max_target or operator set gets near it.
_MAX_ATTEMPTS = 1000


def _random_expression(
    rng: random.Random, leaves: list[int], operators: str
) -> tuple[str, int, int] | None:
    """A random expression tree over ``leaves`` (in order) as ``(text, value, precedence)``.

    Every intermediate value must be a non-negative integer (as in the game), otherwise None.
    Parentheses are printed only where precedence needs them.
    """
    if len(leaves) == 1:
        return str(leaves[0]), leaves[0], _ATOM
    split = rng.randint(1, len(leaves) - 1)
    left = _random_expression(rng, leaves[:split], operators)
    right = _random_expression(rng, leaves[split:], operators)
    if left is None or right is None:
        return None
    (ltext, lvalue, lprec), (rtext, rvalue, rprec) = left, right
    op = rng.choice(operators)
    if op == "+":
        value = lvalue + rvalue
    elif op == "-":
        value = lvalue - rvalue
    elif op == "*":
        value = lvalue * rvalue
    elif rvalue == 0 or lvalue % rvalue:
        return None
    else:
        value = lvalue // rvalue
    if value < 0:
        return None
    prec = _PRECEDENCE[op]
    if lprec < prec:
        ltext = f"({ltext})"
    # a-(b-c) and a/(b/c) need their parentheses; a+(b-c) and a*(b/c) do not.
    if rprec < prec or (rprec == prec and op in "-/"):
        rtext = f"({rtext})"
    return f"{ltext}{op}{rtext}", value, prec


@dataclass(eq=False)
class Countdown(GeneratedTask):
    """Reach a target from given numbers with ``+ - * /``. Prompt ``cd {numbers}>{target}=``.

    A row draws ``num_numbers`` integers uniformly from ``[1, max_number]``, picks a random
    subset of at least ``min_used`` of them in random order, and joins them into a random
    expression tree with ``operators``, keeping only trees whose intermediate values are all
    non-negative integers and whose value (the target) is in ``[1, max_target]``. So a solution
    always exists; the answer column holds that one (others are accepted too). Each number may
    be used at most as often as it is given, not necessarily all. Extra columns: ``numbers``
    (``list[int]``) and ``target`` (``int``). Reward: :class:`~gradbal.tasks.CountdownReward`.

    Args:
        name: Task name.
        num_numbers: How many numbers are given (difficulty knob).
        max_number: Largest given number (difficulty knob).
        min_used: Fewest numbers the generated solution uses (difficulty knob).
        max_target: Largest target (difficulty knob).
        operators: Operators the generated solution may use, a subset of ``"+-*/"``.
        format_reward: Reward for a well-formed expression over allowed numbers with the wrong
            value.
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: If an argument is out of range; in :meth:`load`, if no valid expression is
            found for a row or there are too few distinct problems for ``n_val``.

    Example::

        >>> task = Countdown(n_train=3, n_val=2).load()
        >>> row = task.validation[1]
        >>> row
        {'prompt': 'cd 9 5 3>6=', 'answer': '9-3', 'numbers': [9, 5, 3], 'target': 6}
        >>> completions = ["9-3\\n", "3+5-9/9", "5+3"]
        >>> task.reward([row["prompt"]] * 3, completions, numbers=[row["numbers"]] * 3,
        ...             target=[row["target"]] * 3)
        [1.0, 0.0, 0.1]
    """

    name: str = "countdown"
    num_numbers: int = 3
    max_number: int = 9
    min_used: int = 2
    max_target: int = 100
    operators: str = "+-*/"
    format_reward: float = 0.1
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range(
            "Countdown", "min_used", self.min_used, "num_numbers", self.num_numbers, floor=1
        )
        check_range("Countdown", "1", 1, "max_number", self.max_number, floor=1)
        check_range("Countdown", "1", 1, "max_target", self.max_target, floor=1)
        if not self.operators or not set(self.operators) <= set(_PRECEDENCE):
            raise ValueError(
                f"Countdown: operators must be a non-empty subset of '+-*/'. Got {self.operators!r}."
            )

    def _reward(self) -> CountdownReward:
        return CountdownReward(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        for _ in range(_MAX_ATTEMPTS):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            used = rng.sample(numbers, rng.randint(self.min_used, self.num_numbers))
            expression = _random_expression(rng, used, self.operators)
            if expression is not None and 1 <= expression[1] <= self.max_target:
                text, target, _ = expression
                prompt = f"cd {' '.join(map(str, numbers))}>{target}="
                return {"prompt": prompt, "answer": text, "numbers": numbers, "target": target}
        raise ValueError(
            f"Task {self.name!r}: no expression over the drawn numbers reached a target in "
            f"[1, {self.max_target}] after {_MAX_ATTEMPTS} attempts. Raise max_target or allow "
            f"more operators. Got {self!r}."
        )
