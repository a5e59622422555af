"""Verifiable rewards: small configurable classes callable as a :class:`~gradbal.tasks.RewardFn`.

Each reward's ``__init__`` takes scalars only, so YAML can build one with ``class_path``. Rewards
that compare text first cut the completion at its first newline (completions of the built-in
tasks end at a newline; anything after it is ignored).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from gradbal.tasks.answer_extraction import extract_answer, is_formatted_answer, math_equal
from gradbal.tasks.expression import evaluate_expression

__all__ = [
    "AnswerFormat",
    "CharSimilarity",
    "CountdownReward",
    "ExactMatch",
    "MathAnswerMatch",
    "NumericMatch",
]

# Optional sign, digits with optional thousands separators and decimals, optional exponent.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _first_line(text: str, strip: bool = True) -> str:
    line = text.split("\n", 1)[0]
    return line.strip() if strip else line


def reward_column(columns: dict[str, list[Any]], name: str, reward: object, n: int) -> list[Any]:
    if name not in columns:
        raise ValueError(
            f"{reward!r} reads the column {name!r}, but the reward got columns "
            f"{sorted(columns)}. Add that column to the task's datasets or set the reward's "
            f"column argument to one of those."
        )
    values = columns[name]
    if len(values) != n:
        raise ValueError(
            f"{reward!r}: column {name!r} has {len(values)} values for {n} completions."
        )
    return values


class ExactMatch:
    """1.0 if the completion's first line equals the answer, else 0.0 (always for a null answer).

    Args:
        answer_column: Column holding the reference answer.
        strip: Strip surrounding whitespace from both before comparing.
        case_sensitive: If False, compare case-insensitively (``str.casefold``).

    Example::

        >>> reward = ExactMatch()
        >>> reward(["add 12+34="] * 3, ["46\\n", " 46\\nadd", "47"], answer=["46"] * 3)
        [1.0, 1.0, 0.0]
    """

    def __init__(
        self, answer_column: str = "answer", strip: bool = True, case_sensitive: bool = True
    ) -> None:
        self.answer_column = answer_column
        self.strip = strip
        self.case_sensitive = case_sensitive

    def __repr__(self) -> str:
        return (
            f"ExactMatch(answer_column={self.answer_column!r}, strip={self.strip}, "
            f"case_sensitive={self.case_sensitive})"
        )

    def _normalise(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text if self.case_sensitive else text.casefold()

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        answers = reward_column(columns, self.answer_column, self, len(completions))
        return [
            # A null answer (None) matches nothing, not the text "None".
            float(
                a is not None
                and self._normalise(_first_line(c, strip=False)) == self._normalise(str(a))
            )
            for c, a in zip(completions, answers, strict=True)
        ]


def _parse_first_number(text: str) -> float | None:
    """The first number in ``text`` (``1,000`` reads as 1000), or None if there is none."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group().replace(",", ""))
    return value if math.isfinite(value) else None


class NumericMatch:
    """1.0 if the first number in the completion is within ``tolerance`` of the answer's.

    The answer column is parsed the same way (its first number), so it may be ``"42"`` or
    ``"42 apples"``. A completion without a number, or a null (``None``) answer, scores 0.0.

    Args:
        answer_column: Column holding the reference answer.
        tolerance: Largest accepted absolute difference.

    Raises:
        ValueError: If ``tolerance`` is negative; when called, if an answer holds no number.

    Example::

        >>> reward = NumericMatch(tolerance=0.01)
        >>> reward(["q"] * 4, ["It is 3.001.", "x", "-3", "1,000"], answer=["3", "3", "3", "1000"])
        [1.0, 0.0, 0.0, 1.0]
    """

    def __init__(self, answer_column: str = "answer", tolerance: float = 0.0) -> None:
        if not tolerance >= 0:
            raise ValueError(f"NumericMatch: tolerance must be >= 0. Got {tolerance!r}.")
        self.answer_column = answer_column
        self.tolerance = tolerance

    def __repr__(self) -> str:
        return f"NumericMatch(answer_column={self.answer_column!r}, tolerance={self.tolerance})"

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        answers = reward_column(columns, self.answer_column, self, len(completions))
        rewards = []
        for completion, answer in zip(completions, answers, strict=True):
            if answer is None:  # a null answer matches nothing
                rewards.append(0.0)
                continue
            expected = _parse_first_number(str(answer))
            if expected is None:
                raise ValueError(
                    f"{self!r}: the answer {answer!r} holds no number. Point answer_column at a "
                    f"column of numbers, or use ExactMatch for non-numeric answers."
                )
            got = _parse_first_number(completion)
            rewards.append(float(got is not None and abs(got - expected) <= self.tolerance))
        return rewards


class CharSimilarity:
    """Dense string reward: matching positions over the longer length, in ``[0, 1]``.

    With ``a`` the answer and ``c`` the completion's first line, the reward is
    ``#{i : c[i] == a[i]} / max(len(a), len(c))``: the fraction of answer positions matched,
    scaled down when the lengths differ. It is 1.0 only when both are equal (two empty strings
    count as equal).

    Args:
        answer_column: Column holding the reference answer.
        strip: Strip surrounding whitespace from both before comparing.

    Example::

        >>> reward = CharSimilarity()
        >>> reward(["rev abcd="] * 4, ["dcba\\n", "dcbx", "dcb", "dcbaa"], answer=["dcba"] * 4)
        [1.0, 0.75, 0.75, 0.8]
    """

    def __init__(self, answer_column: str = "answer", strip: bool = True) -> None:
        self.answer_column = answer_column
        self.strip = strip

    def __repr__(self) -> str:
        return f"CharSimilarity(answer_column={self.answer_column!r}, strip={self.strip})"

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        answers = reward_column(columns, self.answer_column, self, len(completions))
        rewards = []
        for completion, answer in zip(completions, answers, strict=True):
            if answer is None:  # a null answer matches nothing
                rewards.append(0.0)
                continue
            got = _first_line(completion, strip=self.strip)
            expected = str(answer).strip() if self.strip else str(answer)
            longest = max(len(got), len(expected))
            matched = sum(x == y for x, y in zip(got, expected, strict=False))
            rewards.append(matched / longest if longest else 1.0)
        return rewards


class CountdownReward:
    """Reward for countdown: reach ``target`` with ``+ - * /`` over the given ``numbers``.

    The completion's first line must be an arithmetic expression (integers, ``+ - * /``,
    parentheses, unary minus; see :func:`~gradbal.tasks.evaluate_expression`) that uses only
    numbers from the row's ``numbers`` column, each at most as often as it is given (not
    necessarily all of them). Scores:

    * 1.0 if it evaluates exactly (with fractions) to the row's ``target``;
    * ``format_reward`` if it is such an expression but evaluates to something else;
    * 0.0 otherwise (not an expression, division by zero, or a number not given).

    Args:
        format_reward: Partial credit for a well-formed expression with the wrong value.

    Raises:
        ValueError: If ``format_reward`` is not in ``[0, 1)``.

    Example::

        >>> reward = CountdownReward()
        >>> reward(
        ...     ["cd 3 5 7>22="] * 4,
        ...     ["3*5+7\\n", "3+5+7", "3*5+7+7", "22"],
        ...     numbers=[[3, 5, 7]] * 4,
        ...     target=[22] * 4,
        ... )
        [1.0, 0.1, 0.0, 0.0]
    """

    def __init__(self, format_reward: float = 0.1) -> None:
        if not 0.0 <= format_reward < 1.0:
            raise ValueError(
                f"CountdownReward: format_reward must be in [0, 1), below the reward of a "
                f"correct answer. Got {format_reward!r}."
            )
        self.format_reward = format_reward

    def __repr__(self) -> str:
        return f"CountdownReward(format_reward={self.format_reward})"

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        numbers = reward_column(columns, "numbers", self, len(completions))
        targets = reward_column(columns, "target", self, len(completions))
        rewards = []
        for completion, given, target in zip(completions, numbers, targets, strict=True):
            evaluation = evaluate_expression(_first_line(completion))
            if evaluation is None or Counter(evaluation.numbers) - Counter(given):
                rewards.append(0.0)
            elif evaluation.value == target:
                rewards.append(1.0)
            else:
                rewards.append(self.format_reward)
        return rewards


class MathAnswerMatch:
    """Reward for chat answers: the reply's final answer equals the reference (``math-verify``).

    Reads the whole reply (not only its first line) and extracts the final answer with
    :func:`~gradbal.tasks.answer_extraction.extract_answer` (``\\boxed{}``, ``####``,
    "the answer is", else the last number); equality is ``math_verify.verify``, so ``0.75``,
    ``3/4`` and ``\\frac{3}{4}`` all match. Scores:

    * 1.0 if the extracted answer equals the reference;
    * ``format_reward`` if it does not, but the reply has the asked-for form: just a number, or
      an answer marked by ``\\boxed{}``, ``####`` or "answer is"
      (:func:`~gradbal.tasks.is_formatted_answer`);
    * 0.0 otherwise.

    Args:
        answer_column: Column holding the reference answer.
        format_reward: Partial credit for a marked but wrong answer, in ``[0, 1)``.

    Raises:
        ValueError: If ``format_reward`` is not in ``[0, 1)``.

    Example::

        >>> reward = MathAnswerMatch(format_reward=0.1)
        >>> reward(
        ...     ["q"] * 4,
        ...     ["12 + 30 = 42", "#### 41", "The answer is 42.0", "no idea"],
        ...     answer=["42"] * 4,
        ... )
        [1.0, 0.1, 1.0, 0.0]
    """

    def __init__(self, answer_column: str = "answer", format_reward: float = 0.0) -> None:
        if not 0.0 <= format_reward < 1.0:
            raise ValueError(
                f"MathAnswerMatch: format_reward must be in [0, 1), below the reward of a "
                f"correct answer. Got {format_reward!r}."
            )
        self.answer_column = answer_column
        self.format_reward = format_reward

    def __repr__(self) -> str:
        return (
            f"MathAnswerMatch(answer_column={self.answer_column!r}, "
            f"format_reward={self.format_reward})"
        )

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        answers = reward_column(columns, self.answer_column, self, len(completions))
        rewards = []
        for completion, reference in zip(completions, answers, strict=True):
            got = extract_answer(completion)
            if got is not None and math_equal(str(reference), got):
                rewards.append(1.0)
            elif is_formatted_answer(completion):
                rewards.append(self.format_reward)
            else:
                rewards.append(0.0)
        return rewards


class AnswerFormat:
    """Format reward: 1.0 if the reply has the answer form asked for, else 0.0 (correctness ignored).

    The form is :func:`~gradbal.tasks.is_formatted_answer`: the reply is just a number, or marks
    its answer with ``\\boxed{...}``, ``####`` or "answer is". With ``max_chars``, replies
    longer than that score 0.0 (a brevity requirement).

    Args:
        max_chars: Longest accepted reply (stripped), or None for no limit.

    Example::

        >>> AnswerFormat(max_chars=20)(["q"] * 4, ["#### 7", "7.", "It is 7", "#### 7" + "!" * 20])
        [1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, max_chars: int | None = None) -> None:
        if max_chars is not None and max_chars < 1:
            raise ValueError(f"AnswerFormat: max_chars must be >= 1 or None. Got {max_chars!r}.")
        self.max_chars = max_chars

    def __repr__(self) -> str:
        return f"AnswerFormat(max_chars={self.max_chars})"

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        return [
            float(
                is_formatted_answer(c)
                and (self.max_chars is None or len(c.strip()) <= self.max_chars)
            )
            for c in completions
        ]
