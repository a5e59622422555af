"""Shared properties of every built-in generated task, plus each task's knobs and errors."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

from gradbal.tasks import Addition, CountChar, Countdown, Reverse, Sort, Task, TaskSource, score

BUILTINS: list[TaskSource] = [Addition(), Countdown(), Reverse(), Sort(), CountChar()]
KEYWORDS = {
    "addition": "add",
    "countdown": "cd",
    "reverse": "rev",
    "sort": "sort",
    "count": "count",
}


@cache
def _load(source_repr: str) -> Task:
    # One load per default task for the whole module (each takes ~0.1 s).
    return next(s for s in BUILTINS if repr(s) == source_repr).load()


def _columns(task: Task, split: str) -> tuple[list[str], list[dict[str, Any]]]:
    dataset = getattr(task, split)
    rows = [{k: v for k, v in row.items() if k != "prompt"} for row in dataset]
    return dataset["prompt"], rows


@pytest.fixture(params=BUILTINS, ids=lambda s: s.name)
def task(request: pytest.FixtureRequest) -> Task:
    return _load(repr(request.param))


def test_default_sizes_and_names(task: Task) -> None:
    assert len(task.train) == 5000 and len(task.validation) == 200
    assert task.name in KEYWORDS
    assert {"prompt", "answer"} <= set(task.train.column_names)


def test_load_is_deterministic(task: Task) -> None:
    source = next(s for s in BUILTINS if s.name == task.name)
    again = source.load()
    assert again.train.to_dict() == task.train.to_dict()
    assert again.validation.to_dict() == task.validation.to_dict()


def test_splits_are_disjoint_and_validation_is_unique(task: Task) -> None:
    val_prompts = task.validation["prompt"]
    assert len(set(val_prompts)) == len(val_prompts)
    assert not set(val_prompts) & set(task.train["prompt"])


def test_prompt_format(task: Task) -> None:
    for prompt, answer in zip(task.train["prompt"], task.train["answer"], strict=True):
        assert prompt.split(" ", 1)[0] == KEYWORDS[task.name]
        assert prompt.endswith("=") and "\n" not in prompt
        assert answer and "\n" not in answer and answer == answer.strip()


def test_reference_answers_get_full_reward(task: Task) -> None:
    for split in ("train", "validation"):
        prompts, rows = _columns(task, split)
        completions = [row["answer"] + "\n" for row in rows]
        assert score(task, prompts, completions, rows) == [1.0] * len(prompts)


def test_wrong_answers_get_less_than_full_reward(task: Task) -> None:
    prompts, rows = _columns(task, "validation")
    for wrong in ([row["answer"] + "9" for row in rows], [""] * len(rows)):
        rewards = score(task, prompts, wrong, rows)
        assert all(0.0 <= r < 1.0 for r in rewards)


def test_seed_changes_data_and_n_train_keeps_validation() -> None:
    base = Reverse(n_train=50, n_val=20).load()
    assert (
        Reverse(n_train=50, n_val=20, seed=1).load().validation["prompt"]
        != base.validation["prompt"]
    )
    assert Reverse(n_train=80, n_val=20).load().validation.to_dict() == base.validation.to_dict()


def test_task_kinds_draw_different_strings() -> None:
    reversed_ = [p.split(" ")[1] for p in Reverse(n_train=5, n_val=5).load().validation["prompt"]]
    sorted_ = [p.split(" ")[1] for p in Sort(n_train=5, n_val=5).load().validation["prompt"]]
    assert reversed_ != sorted_


def test_addition_digits_knob() -> None:
    task = Addition(min_digits=3, max_digits=4, n_train=200, n_val=50).load()
    for prompt, answer in zip(task.train["prompt"], task.train["answer"], strict=True):
        a, b = re.fullmatch(r"add (\d+)\+(\d+)=", prompt).groups()  # type: ignore[union-attr]
        assert 3 <= len(a) <= 4 and 3 <= len(b) <= 4
        assert int(answer) == int(a) + int(b)


@pytest.mark.parametrize("cls", [Reverse, Sort, CountChar])
def test_string_length_and_alphabet_knobs(cls: type[Reverse | Sort | CountChar]) -> None:
    task = cls(min_len=7, max_len=9, alphabet="xyz", n_train=100, n_val=20).load()
    for prompt in task.train["prompt"]:
        text = prompt.rstrip("=").split(" ")[-1]
        assert 7 <= len(text) <= 9 and set(text) <= set("xyz")


def test_answers_are_correct() -> None:
    for prompt, answer in zip(*Sort(n_train=100, n_val=5).load().train[:].values(), strict=True):
        assert answer == "".join(sorted(prompt[5:-1]))
    for prompt, answer in zip(*Reverse(n_train=100, n_val=5).load().train[:].values(), strict=True):
        assert answer == prompt[4:-1][::-1]
    for prompt, answer in zip(
        *CountChar(n_train=100, n_val=5).load().train[:].values(), strict=True
    ):
        letter, text = re.fullmatch(r"count (\w) in (\w+)=", prompt).groups()  # type: ignore[union-attr]
        assert answer == str(text.count(letter))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Addition(name="Add"), r"name must match"),
        (lambda: Addition(n_train=0), r"n_train must be >= 1\. Got 0"),
        (lambda: Addition(n_val=-1), r"n_val must be >= 1\. Got -1"),
        (
            lambda: Addition(min_digits=3, max_digits=2),
            r"min_digits <= max_digits\. Got min_digits=3, max_digits=2",
        ),
        (lambda: Addition(min_digits=0), r"1 <= min_digits"),
        (lambda: Reverse(min_len=0), r"1 <= min_len"),
        (lambda: Sort(alphabet=""), r"alphabet must be a non-empty string"),
        (lambda: CountChar(alphabet="ab c"), r"without whitespace.*Got 'ab c'"),
        (lambda: Countdown(min_used=4), r"min_used <= num_numbers\. Got min_used=4, num_numbers=3"),
        (lambda: Countdown(max_number=0), r"max_number"),
        (lambda: Countdown(operators="+^"), r"subset of '\+-\*/'\. Got '\+\^'"),
        (lambda: Countdown(format_reward=1.0), r"format_reward must be in \[0, 1\)"),
    ],
)
def test_invalid_arguments(factory: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_problem_space_too_small_for_validation() -> None:
    with pytest.raises(
        ValueError, match=r"only generate 100 distinct validation prompts, fewer than n_val=200"
    ):
        Addition(min_digits=1, max_digits=1).load()


def test_validation_covering_everything_leaves_no_train_prompts() -> None:
    with pytest.raises(ValueError, match=r"covers almost every possible prompt"):
        Reverse(min_len=1, max_len=1, alphabet="ab", n_train=5, n_val=2).load()
