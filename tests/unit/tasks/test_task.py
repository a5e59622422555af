"""Tests for the Task contract and the ``score`` helper."""

from __future__ import annotations

from typing import Any

import pytest
from datasets import Dataset, DatasetDict

from gradbal.tasks import Addition, ExactMatch, FileTask, Task, TaskSource, score


def _split(**extra: list[Any]) -> Dataset:
    return Dataset.from_dict({"prompt": ["add 1+2=", "add 2+2="], "answer": ["3", "4"], **extra})


def _task(reward: Any = None, **kwargs: Any) -> Task:
    return Task("toy", train=_split(), validation=_split(), reward=reward or ExactMatch(), **kwargs)


def test_valid_task() -> None:
    task = _task(success_threshold=0.5)
    assert task.name == "toy" and task.success_threshold == 0.5
    with pytest.raises(AttributeError):
        task.name = "other"  # type: ignore[misc]


def test_task_sources_satisfy_the_protocol() -> None:
    assert isinstance(Addition(), TaskSource)
    assert isinstance(FileTask("f", data_files="x.jsonl"), TaskSource)


@pytest.mark.parametrize("name", ["Addition", "my-task", "", "a b", "é"])
def test_bad_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"must match \[a-z0-9_\]\+.*Got"):
        Task(name, train=_split(), validation=_split(), reward=ExactMatch())


def test_bad_name_suggests_a_fix() -> None:
    with pytest.raises(ValueError, match=r"Got 'My-Task'; try 'my_task'"):
        Task("My-Task", train=_split(), validation=_split(), reward=ExactMatch())


def test_empty_split() -> None:
    with pytest.raises(ValueError, match=r"Task 'toy': the validation split is empty"):
        Task("toy", train=_split(), validation=_split().select([]), reward=ExactMatch())


def test_missing_column_lists_columns_found() -> None:
    train = Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(
        ValueError, match=r"no 'prompt' column\. Columns found: \['question', 'answer'\]"
    ):
        Task("toy", train=train, validation=train, reward=ExactMatch())


def test_non_string_column() -> None:
    train = Dataset.from_dict({"prompt": ["q"], "answer": [3]})
    with pytest.raises(
        ValueError, match=r"column 'answer' of the train split must hold strings.*int64"
    ):
        Task("toy", train=train, validation=train, reward=ExactMatch())


def test_splits_must_share_columns() -> None:
    with pytest.raises(ValueError, match=r"same columns.*'target'"):
        Task("toy", train=_split(target=[1, 2]), validation=_split(), reward=ExactMatch())


def test_wrong_types() -> None:
    with pytest.raises(
        TypeError, match=r"train must be a datasets\.Dataset.*dataset_dict\['train'\]"
    ):
        Task("toy", train=DatasetDict(train=_split()), validation=_split(), reward=ExactMatch())
    with pytest.raises(TypeError, match=r"reward must be callable.*str"):
        Task("toy", train=_split(), validation=_split(), reward="exact")  # type: ignore[arg-type]


def test_success_threshold_must_be_finite() -> None:
    with pytest.raises(ValueError, match=r"success_threshold must be a finite number\. Got nan"):
        _task(success_threshold=float("nan"))


class _Recorder:
    def __init__(self, result: Any = None) -> None:
        self.calls: list[tuple[list[str], list[str], dict[str, list[Any]]]] = []
        self.result = result

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        self.calls.append((prompts, completions, columns))
        return self.result if self.result is not None else [0.5] * len(prompts)


def test_score_transposes_columns() -> None:
    recorder = _Recorder()
    rows = [{"answer": "3", "target": 1}, {"answer": "4", "target": 2}]
    assert score(_task(recorder), ["p1", "p2"], ["c1", "c2"], rows) == [0.5, 0.5]
    assert recorder.calls == [
        (["p1", "p2"], ["c1", "c2"], {"answer": ["3", "4"], "target": [1, 2]})
    ]


def test_score_with_separate_answers() -> None:
    task = _task()
    assert score(task, ["p", "p"], ["3", "5"], [{}, {}], answers=["3", "4"]) == [1.0, 0.0]


def test_score_empty_batch_does_not_call_reward() -> None:
    recorder = _Recorder()
    assert score(_task(recorder), [], [], []) == []
    assert recorder.calls == []


def test_score_input_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"Got 2 prompts and \{'completions': 1, 'columns': 2\}"):
        score(_task(), ["a", "b"], ["c"], [{}, {}])


def test_score_rows_with_different_keys() -> None:
    with pytest.raises(ValueError, match=r"same keys\. Row 0 has \['answer'\], row 1 has \[\]"):
        score(_task(), ["a", "b"], ["c", "d"], [{"answer": "1"}, {}])


def test_score_rejects_clashing_column_names() -> None:
    with pytest.raises(ValueError, match=r"\['completions'\] clash"):
        score(_task(), ["a"], ["c"], [{"completions": 1}])


def test_score_wrong_length_names_task_and_example() -> None:
    with pytest.raises(
        ValueError,
        match=r"Task 'toy'.*returned 1 values for 2 completions.*prompt='p1', completion='c1'",
    ):
        score(_task(_Recorder([1.0])), ["p1", "p2"], ["c1", "c2"], [{}, {}])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_score_non_finite_shows_offending_sample(bad: float) -> None:
    with pytest.raises(
        ValueError, match=r"Task 'toy'.*returned .*sample 1: prompt='p2', completion='c2'.*finite"
    ):
        score(_task(_Recorder([1.0, bad])), ["p1", "p2"], ["c1", "c2"], [{}, {}])


def test_score_non_numeric_result() -> None:
    with pytest.raises(ValueError, match=r"must return a list of floats"):
        score(_task(_Recorder([None])), ["p"], ["c"], [{}])


def test_score_wraps_reward_exceptions() -> None:
    def broken(prompts: list[str], completions: list[str], **columns: list[Any]) -> list[float]:
        raise KeyError("target")

    with pytest.raises(RuntimeError, match=r"Task 'toy': reward .* raised KeyError") as info:
        score(_task(broken), ["p" * 300], ["c"], [{"answer": "1"}])
    assert isinstance(info.value.__cause__, KeyError)
    # The example prompt is shown, truncated.
    assert f"prompt='{'p' * 200}...', completion='c'" in str(info.value)
