"""Tests for the safe countdown expression evaluator."""

from __future__ import annotations

import builtins
import time
from fractions import Fraction

import pytest

from gradbal.tasks import Evaluation, evaluate_expression


@pytest.mark.parametrize(
    ("text", "value", "numbers"),
    [
        ("1+2*3", 7, [1, 2, 3]),
        ("(1+2)*3", 9, [1, 2, 3]),
        ("10-2-3", 5, [10, 2, 3]),
        ("12/2/3", 2, [12, 2, 3]),
        ("7/2", Fraction(7, 2), [7, 2]),
        ("7/2*2", 7, [7, 2, 2]),
        ("-3+5", 2, [3, 5]),
        ("2*-3", -6, [2, 3]),
        ("-(4-6)", 2, [4, 6]),
        (" 1 + 2 ", 3, [1, 2]),
        ("\t8 /\t4", 2, [8, 4]),
        ("42", 42, [42]),
        ("007", 7, [7]),
    ],
)
def test_valid_expressions(text: str, value: Fraction | int, numbers: list[int]) -> None:
    assert evaluate_expression(text) == Evaluation(Fraction(value), numbers)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('echo pwned')",
        "2**999999",
        "2**3",
        "1/0",
        "1/(3-3)",
        "5/(2*0)",
        "(((((",
        "(1+2",
        "1+2)",
        "()",
        "1e9",
        "3.5",
        "0x10",
        "1_000",
        "",
        "   ",
        "1 2",
        "1+",
        "*2",
        "1+2\n3",
        "abs(-1)",
        "lambda: 1",
        "[1, 2]",
        "1;2",
        "True",
        "１+２",  # fullwidth digits
        "٣+1",  # Arabic-Indic digit three: int() would accept it
        "1 // 2",
        "1 % 2",
        "x",
    ],
)
def test_invalid_expressions_return_none(text: str) -> None:
    assert evaluate_expression(text) is None


def test_nesting_limit() -> None:
    assert evaluate_expression("(" * 16 + "1" + ")" * 16) == Evaluation(Fraction(1), [1])
    assert evaluate_expression("(" * 17 + "1" + ")" * 17) is None
    assert evaluate_expression("-" * 17 + "1") is None
    assert evaluate_expression("(" * 17 + "1" + ")" * 17, max_depth=20) is not None


def test_length_limit_applies_before_parsing() -> None:
    assert evaluate_expression("1+" * 99 + "1") is not None  # 199 characters
    assert evaluate_expression("1+" * 100 + "1") is None  # 201 characters
    assert evaluate_expression("(" * 1_000_000) is None
    assert evaluate_expression("1+1", max_length=2) is None


def test_worst_case_input_is_fast() -> None:
    start = time.perf_counter()
    for text in ("9" * 200, "9*" * 99 + "9", "99/" * 49 + "7", "(" * 16 + "1" + ")" * 16):
        evaluate_expression(text)
    assert time.perf_counter() - start < 0.1


def test_never_calls_eval_exec_or_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluate_expression must not eval/exec/compile")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    assert evaluate_expression("(3+5)*7") == Evaluation(Fraction(56), [3, 5, 7])
    assert evaluate_expression("__import__('os')") is None
