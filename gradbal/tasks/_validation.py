"""Row checks run when tasks are set up, before step 0: every prompt and answer is real text."""

from __future__ import annotations

import warnings
from typing import Any

import datasets

from gradbal.tasks.task import Task

_SPLITS = ("train", "validation")
_COLUMNS = ("prompt", "answer")


def column_values(dataset: datasets.Dataset, column: str) -> list[Any]:
    """All values of ``column`` as a list, fast (one Arrow read, not one per row)."""
    return list(dataset.select_columns([column])[:][column])


def check_rows(task: Task) -> None:
    """Raise ValueError naming the first row with a null prompt or answer, or an empty prompt.

    Both splits are checked. A null answer would reach the reward as ``None``; an empty prompt
    gives the model nothing to condition on and fails at the first batch. Whitespace-only text
    counts as empty. The message names the task and the row as :meth:`Task.row_location`
    describes it (file and line for a FileTask). Preference tasks (with ``chosen`` and
    ``rejected`` columns) may have empty prompts: an implicit prompt (the common start of chosen
    and rejected) can be empty. An empty (not null) answer only warns: a task whose reward does
    not read the answer (a length or format reward, unit tests in another column) may leave it
    empty, but a reward that compares with it (``ExactMatch``) would score an empty completion
    as correct.

    Example::

        >>> from datasets import Dataset
        >>> from gradbal.tasks import ExactMatch
        >>> split = Dataset.from_dict({"prompt": ["1+1=", " "], "answer": ["2", "4"]})
        >>> check_rows(Task("tiny", train=split, validation=split, reward=ExactMatch()))
        Traceback (most recent call last):
        ...
        ValueError: Task 'tiny': row 2 of the train split has an empty prompt ' '. ...
    """
    preference = {"chosen", "rejected"} <= set(task.train.column_names)
    empty_answers: list[tuple[str, int]] = []
    for split in _SPLITS:
        dataset = getattr(task, split)
        for column in _COLUMNS:
            for index, value in enumerate(column_values(dataset, column)):
                if value is not None and (value.strip() or (preference and column == "prompt")):
                    continue
                if value is not None and column == "answer":
                    empty_answers.append((split, index))
                    continue
                problem = "null" if value is None else "empty"
                shown = f" {value!r}" if value is not None else ""
                raise ValueError(
                    f"Task {task.name!r}: {task.row_location(split, index)} has "
                    f"{'a' if problem == 'null' else 'an'} {problem} {column}{shown}. Every row "
                    f"needs a prompt and an answer: fill in or delete that row"
                    + (
                        ", or point column_mapping at the column that holds the text."
                        if task.describe_row is not None
                        else "."
                    )
                )
    if empty_answers:
        split, index = empty_answers[0]
        warnings.warn(
            f"Task {task.name!r}: {len(empty_answers)} rows have an empty answer, the first "
            f"{task.row_location(split, index)}. Fine if the task's reward does not read the "
            "answer; a reward that compares with it (ExactMatch, NumericMatch) scores an empty "
            "completion as correct there. Fill in or delete those rows if it does.",
            UserWarning,
            stacklevel=2,
        )
