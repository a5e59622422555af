"""Chat tasks for instruct models: answer extraction, math-verify rewards, generated tasks."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import yaml
from jsonargparse import ArgumentParser

from gradbal.tasks import (
    AnswerFormat,
    ChatAddition,
    ChatComparison,
    ChatMultiplication,
    ChatPreference,
    ChatSequence,
    ChatWordProblem,
    MathAnswerMatch,
    TaskSource,
    extract_answer,
    is_formatted_answer,
    math_equal,
    score,
)

CHAT_TASKS = (ChatAddition, ChatComparison, ChatMultiplication, ChatSequence, ChatWordProblem)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("42", "42"),
        ("23 + 19 = 42", "42"),
        ("So the answer is 42. Check: 40 + 2.", "42"),  # marked answer beats the last number
        ("The answer: -7, since 3 - 10 = -7", "-7"),
        ("#### 17 + 25 = 42\nmore text 99", "42"),  # the last number of the marked line
        ("The answer is 3.5 kg. Or 7.", "3.5"),
        ("#### 42\nThat is all.", "42"),
        ("It is \\boxed{\\frac{3}{4}}, i.e. 0.75 or 12", "\\frac{3}{4}"),
        ("\\boxed{x^{2}} then 5", "x^{2}"),  # nested braces
        ("It has 1,000 pages", "1,000"),
        ("no number here", None),
        ("\\boxed{unclosed 5", "5"),
    ],
)
def test_extract_answer(reply: str, expected: str | None) -> None:
    assert extract_answer(reply) == expected


def test_extract_answer_marked_only() -> None:
    assert extract_answer("It is 12", marked_only=True) is None
    assert extract_answer("answer is 12", marked_only=True) == "12"


@pytest.mark.parametrize(
    ("reference", "answer", "equal"),
    [
        ("42", "42.0", True),
        ("0.75", "\\frac{3}{4}", True),
        ("1000", "1,000", True),
        ("-3", "-3", True),
        ("42", "41", False),
        ("12", "12,000", False),
        ("5", "x", False),
    ],
)
def test_math_equal(reference: str, answer: str, equal: bool) -> None:
    assert math_equal(reference, answer) is equal


def test_math_answer_match_scores_and_partial_credit() -> None:
    reward = MathAnswerMatch(format_reward=0.25)
    replies = ["44", "42 + 2 = 44\n", "44.", "#### 45", "45", "forty-four", "It is 45 I think"]
    assert reward(["q"] * 7, replies, answer=["44"] * 7) == [1.0, 1.0, 1.0, 0.25, 0.25, 0.0, 0.0]
    with pytest.raises(ValueError, match="format_reward"):
        MathAnswerMatch(format_reward=1.0)


def test_answer_format() -> None:
    replies = ["44", "The answer is 44.", "44 apples", "\\boxed{4}", "x"]
    assert AnswerFormat()(["q"] * 5, replies) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert is_formatted_answer(" -3.5 ") and not is_formatted_answer("3 4")
    with pytest.raises(ValueError, match="max_chars"):
        AnswerFormat(max_chars=0)


@pytest.mark.parametrize("cls", CHAT_TASKS)
def test_chat_task_is_deterministic_disjoint_and_self_consistent(cls: Any) -> None:
    task = cls(n_train=50, n_val=20).load()
    again = cls(n_train=50, n_val=20).load()
    assert task.train.to_list() == again.train.to_list()
    assert task.validation.to_list() == again.validation.to_list()
    val_prompts = set(task.validation["prompt"])
    assert len(val_prompts) == 20 and not val_prompts & set(task.train["prompt"])
    for row in task.validation:
        assert row["prompt"].endswith("Reply with just the final number, nothing else.")
        assert re.fullmatch(r"\d+", row["answer"])
    rows = task.validation.to_list()
    prompts = [r["prompt"] for r in rows]
    answers = [r["answer"] for r in rows]
    # the reference answer, bare or in a sentence, is correct; off by one is not
    assert score(task, prompts, answers, [{}] * 20, answers=answers) == [1.0] * 20
    sentences = [f"So the answer is {a}." for a in answers]
    assert score(task, prompts, sentences, [{}] * 20, answers=answers) == [1.0] * 20
    wrong = [str(int(a) + 1) for a in answers]
    assert max(score(task, prompts, wrong, [{}] * 20, answers=answers)) < 1.0
    assert cls(n_train=50, n_val=20, seed=1).load().validation.to_list() != rows


def _answer_of(prompt: str) -> int:
    """Recompute the answer from the prompt text, independently of the generator."""
    question = prompt.split("? Reply")[0]
    if m := re.fullmatch(r"What is (\d+) \+ (\d+)", question):
        return int(m[1]) + int(m[2])
    if m := re.fullmatch(r"Which number is (larger|smaller), (\d+) or (\d+)", question):
        assert m[2] != m[3]
        return (max if m[1] == "larger" else min)(int(m[2]), int(m[3]))
    if m := re.fullmatch(r"What is (\d+) times (\d+)", question):
        return int(m[1]) * int(m[2])
    if m := re.fullmatch(r"What number comes after \d+ in the sequence ([\d, ]+)", question):
        terms = [int(x) for x in m[1].split(", ")]
        return terms[-1] + (terms[1] - terms[0])
    m = re.fullmatch(
        r"\w+ has (\d+) (\w+)\. \w+ (buys|gives away) (\d+)[\w ]*\. How many .*", question
    )
    assert m is not None, prompt
    return int(m[1]) + int(m[4]) if m[3] == "buys" else int(m[1]) - int(m[4])


@pytest.mark.parametrize("cls", CHAT_TASKS)
def test_chat_answers_are_correct(cls: Any) -> None:
    for row in cls(n_train=100, n_val=50).load().train:
        assert int(row["answer"]) == _answer_of(row["prompt"]) >= 0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ChatAddition(min_value=5, max_value=2), "min_value"),
        (lambda: ChatMultiplication(format_reward=1.5), "format_reward"),
        (lambda: ChatSequence(length=1), "length"),
        (lambda: ChatComparison(min_value=5, max_value=5), "min_value"),
        (lambda: ChatSequence(min_step=0), "min_step"),
        (lambda: ChatWordProblem(name="Bad-Name"), "name"),
    ],
)
def test_invalid_arguments(factory: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_chat_preference_pairs() -> None:
    task = ChatPreference(ChatMultiplication(n_train=30, n_val=10)).load()
    assert task.name == "pref_chat_multiplication"
    source = ChatMultiplication(n_train=30, n_val=10).load()
    assert task.validation["prompt"] == source.validation["prompt"]
    for row in task.train:
        assert row["chosen"] == row["answer"] and row["rejected"] != row["chosen"]
        assert int(row["rejected"]) >= 0 and abs(int(row["rejected"]) - int(row["chosen"])) <= 10
    rows = task.validation.to_list()
    got = task.reward([r["prompt"] for r in rows], [r["chosen"] for r in rows], **_columns(rows))
    assert got == [1.0] * 10


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}


def test_chat_tasks_from_yaml() -> None:
    config = """
tasks:
  - class_path: gradbal.tasks.ChatAddition
    init_args: {max_value: 20, n_val: 5}
  - class_path: gradbal.tasks.ChatPreference
    init_args:
      source: {class_path: gradbal.tasks.ChatSequence, init_args: {length: 3}}
"""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--tasks", type=list[TaskSource])
    cfg = parser.parse_object(yaml.safe_load(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = parser.instantiate_classes(cfg).tasks
    assert isinstance(tasks[0], ChatAddition) and tasks[0].max_value == 20
    assert isinstance(tasks[1], ChatPreference) and tasks[1].source.length == 3
