"""Safe parser and exact evaluator for the small arithmetic expressions of the countdown task.

The grammar is integers, ``+ - * /``, parentheses and unary minus, evaluated with
:class:`fractions.Fraction` so ``7/2*2`` is exactly 7. It is a hand-written recursive-descent
parser over a whitelist of characters: model output is never passed to ``eval``, ``exec``,
``compile`` or ``ast``, and there is no power operator, so no input can allocate huge numbers.

Grammar::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := "-" factor | "(" expr ")" | INTEGER
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

__all__ = ["Evaluation", "evaluate_expression"]

# ASCII only: \d would also accept other scripts' digits, which int() happily parses.
_TOKEN = re.compile(r"[ \t]*(?:([0-9]+)|([-+*/()]))")


class Evaluation(NamedTuple):
    """The exact value of a valid expression and the integer literals it is made of.

    Attributes:
        value: The exact value of the expression.
        numbers: The integer literals, in the order they appear (``-3`` contributes ``3``).
    """

    value: Fraction
    numbers: list[int]


class _Invalid(Exception):
    """Raised inside the parser; :func:`evaluate_expression` turns it into ``None``."""


class _Parser:
    def __init__(self, tokens: list[str], max_depth: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.max_depth = max_depth
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _Invalid("unexpected end of expression")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise _Invalid("division by zero")
            else:
                value = value / rhs
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token[0] in "0123456789":
            self.numbers.append(int(token))
            return Fraction(int(token))
        if token not in ("-", "("):
            raise _Invalid(f"unexpected token {token!r}")
        # Unary minus and parentheses both recurse; bounding them bounds the Python stack.
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Invalid("nesting too deep")
        if token == "-":
            value = -self.factor()
        else:
            value = self.expr()
            if self.take() != ")":
                raise _Invalid("unbalanced parentheses")
        self.depth -= 1
        return value


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    end = len(text.rstrip(" \t"))
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _Invalid(f"unexpected character {text[pos]!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


def evaluate_expression(
    text: str, *, max_length: int = 200, max_depth: int = 16
) -> Evaluation | None:
    """Parse and evaluate an arithmetic expression exactly, or return ``None`` if it is invalid.

    Invalid means: longer than ``max_length`` characters, empty, any character other than
    ASCII digits, spaces, tabs and ``+-*/()``, malformed (``2**3``, ``(1+2``, ``1 2``), nested deeper than
    ``max_depth`` parentheses or unary minuses, or dividing by zero anywhere.

    Args:
        text: The expression, e.g. ``"(3+5)*7"``.
        max_length: Longer inputs are rejected before parsing.
        max_depth: Maximum nesting of parentheses and unary minus.

    Returns:
        The exact value and the integer literals used, or ``None`` for an invalid expression.

    Example::

        >>> evaluate_expression("(3+5)*7")
        Evaluation(value=Fraction(56, 1), numbers=[3, 5, 7])
        >>> evaluate_expression("7/2")
        Evaluation(value=Fraction(7, 2), numbers=[7, 2])
        >>> evaluate_expression("__import__('os')") is None
        True
        >>> evaluate_expression("1/(2-2)") is None
        True
    """
    if len(text) > max_length:
        return None
    try:
        tokens = _tokenize(text)
        if not tokens:
            return None
        parser = _Parser(tokens, max_depth)
        value = parser.expr()
        if parser.peek() is not None:
            raise _Invalid(f"unexpected token {parser.peek()!r}")
    except _Invalid:
        return None
    return Evaluation(value, parser.numbers)
