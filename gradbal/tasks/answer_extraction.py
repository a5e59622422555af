"""Finding the final answer in a chat model's reply, and checking it with ``math-verify``.

Instruct models answer in sentences ("17 + 25 = 42, so the answer is 42."), so rewards for them
first pick the answer out of the reply, in this order (the first that applies wins):

1. the content of the last ``\\boxed{...}``;
2. the last number in the sentence (or line) after the last ``####``;
3. the last number in the sentence (or line) after the last "answer is" / "answer:" (any
   case);
4. (unless ``marked_only``) the last number anywhere in the reply.

Equivalence of the extracted answer and the reference (``0.75`` = ``3/4`` = ``\\frac{3}{4}``,
``1,000`` = ``1000``) is decided by Hugging Face's ``math-verify`` (``parse`` + ``verify``), not
by hand-written parsing.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["extract_answer", "is_formatted_answer", "math_equal"]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:/\d+)?")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_ONLY_NUMBER = re.compile(rf"\s*(?:{_NUMBER.pattern})\.?\s*")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None  # unclosed brace: no boxed answer


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_answer(text: str, *, marked_only: bool = False) -> str | None:
    """The final answer in ``text`` (see the module docs for the order), or None.

    Args:
        text: a model's reply.
        marked_only: only accept an answer marked by ``\\boxed{}``, ``####`` or "answer is".

    Example::

        >>> extract_answer("3 + 4 = 7. The answer is 7.")
        '7'
        >>> extract_answer("#### 17 + 25 = 42"), extract_answer("so \\\\boxed{\\\\frac{3}{4}}")
        ('42', '\\\\frac{3}{4}')
        >>> extract_answer("It is 12 or 13"), extract_answer("It is 12", marked_only=True)
        ('13', None)
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    for marker in ("####", _ANSWER_IS):
        if isinstance(marker, str):
            position = text.rfind(marker)
            end = position + len(marker)
        else:
            matches = list(marker.finditer(text))
            position = matches[-1].start() if matches else -1
            end = matches[-1].end() if matches else -1
        if position >= 0:
            rest = text[end:].lstrip()
            stop = _SENTENCE_END.search(rest)
            number = _last_number(rest[: stop.start()] if stop else rest)
            if number is not None:
                return number
    return None if marked_only else _last_number(text)


def is_formatted_answer(text: str) -> bool:
    """Whether the reply is just a number, or marks its answer (``\\boxed{}``, ``####``, "answer is").

    Example::

        >>> [is_formatted_answer(t) for t in ["44", " 44.", "#### 7", "It is 7", "7 apples"]]
        [True, True, True, False, False]
    """
    return _ONLY_NUMBER.fullmatch(text) is not None or (
        extract_answer(text, marked_only=True) is not None
    )


def _parse(text: str) -> list[Any]:
    from math_verify import parse  # imported late: sympy and antlr take about a second

    return list(parse(text if text.startswith("$") else f"${text}$"))


def math_equal(reference: str, answer: str) -> bool:
    """Whether ``answer`` equals ``reference`` mathematically (``math_verify.verify``).

    Example::

        >>> math_equal("0.75", "3/4"), math_equal("1000", "1,000"), math_equal("42", "41")
        (True, True, False)
    """
    gold = _parse(reference)
    target = _parse(answer)
    if not gold or not target:
        return False
    from math_verify import verify

    return bool(verify(gold, target))
