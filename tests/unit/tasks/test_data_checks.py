"""Rows checked at load: null/empty text named by task and row, rows traced back to file lines,
and rewards that never score a null answer as correct."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from gradbal.datamodules import MultiTaskDataModule
from gradbal.datamodules.multitask import collate_rows
from gradbal.tasks import (
    CharSimilarity,
    ExactMatch,
    FileTask,
    NumericMatch,
    PreferenceFileTask,
    Task,
    check_rows,
    preference_task,
)


@pytest.mark.parametrize("reward", [ExactMatch(), NumericMatch(), CharSimilarity()])
def test_rewards_score_a_null_answer_zero(reward: Any) -> None:
    # Before: ExactMatch compared with str(None) == "None" and scored 1.0.
    assert reward(["q", "q"], ["None", ""], answer=[None, None]) == [0.0, 0.0]


def test_collate_keeps_a_null_answer_null() -> None:
    batch = collate_rows([(0, {"prompt": "q", "answer": None})])
    assert batch["answer"] == [None]
    assert ExactMatch()(batch["prompt"], ["None"], answer=batch["answer"]) == [0.0]


def test_task_rows_are_named_by_split_and_1_based_row() -> None:
    good = Dataset.from_dict({"prompt": ["a", "b"], "answer": ["1", "2"]})
    bad = Dataset.from_dict({"prompt": ["a", "b", ""], "answer": ["1", "2", "3"]})
    with pytest.raises(ValueError, match=r"Task 'qa': row 3 of the validation split has an empty"):
        check_rows(Task("qa", train=good, validation=bad, reward=ExactMatch()))


def test_datamodule_checks_code_built_tasks_before_step_0() -> None:
    class Source:
        name = "qa"

        def load(self) -> Task:
            split = Dataset.from_dict({"prompt": ["a", None], "answer": ["1", "2"]})
            return Task("qa", train=split, validation=split, reward=ExactMatch())

    with pytest.raises(ValueError, match=r"Task 'qa': row 2 of the train split has a null prompt"):
        MultiTaskDataModule([Source()], batch_size=1).setup("fit")


def test_preference_tasks_may_have_empty_prompts() -> None:
    rows = [{"prompt": "", "chosen": "good", "rejected": "bad"}] * 2
    check_rows(preference_task("prefs", rows, rows))


def _jsonl(path: Path, rows: list[dict[str, Any]], gap: str = "\n\n") -> str:
    path.write_text(gap.join(json.dumps(row) for row in rows) + "\n")  # blank lines between
    return str(path)


def test_rows_are_traced_to_their_line_through_carving_and_subsampling(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(30)]
    source = FileTask(
        "qa",
        data_files=_jsonl(tmp_path / "qa.jsonl", rows),
        column_mapping={"question": "prompt"},
        validation_size=7,
        max_train_samples=11,
        cache_dir=str(tmp_path / "cache"),
    )
    task = source.load()
    assert "__gradbal_row__" not in task.train.column_names
    for split in ("train", "validation"):
        dataset = getattr(task, split)
        for index in range(len(dataset)):
            i = int(dataset[index]["answer"])  # row i is on line 2*i+1 (blank lines between)
            assert (
                task.row_location(split, index) == f"file {source.data_files!r}, line {2 * i + 1}"
            )


def test_a_null_answer_landing_in_carved_validation_names_its_line(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [{"prompt": f"q{i}", "answer": str(i)} for i in range(12)]
    rows[8]["answer"] = None
    path = _jsonl(tmp_path / "qa.jsonl", rows)
    for seed in range(3):  # wherever the carve puts row 8, its line is 17
        source = FileTask(
            "qa", data_files=path, validation_size=6, seed=seed, cache_dir=str(tmp_path / "cache")
        )
        with pytest.raises(ValueError, match=r"qa.jsonl', line 17 has a null answer"):
            source.load()


def test_csv_and_parquet_rows_are_named(tmp_path: Path) -> None:
    csv_path = tmp_path / "qa.csv"
    csv_path.write_text('prompt,answer\n"two\nlines",1\nq,\n')  # row 2 starts on line 4
    files: dict[str, str | list[str]] = {"train": str(csv_path), "validation": str(csv_path)}
    with pytest.raises(ValueError, match=r"qa.csv', line 4 has a null answer"):
        FileTask("qa", data_files=files, cache_dir=str(tmp_path / "c")).load()
    pq_path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", " "], "answer": ["1", "2", "3"]}), pq_path)
    files = {"train": str(pq_path), "validation": str(pq_path)}
    with pytest.raises(ValueError, match=r"qa.parquet', row 3 has an empty prompt"):
        FileTask("qa", data_files=files, cache_dir=str(tmp_path / "c")).load()


def test_numbers_mixed_with_text_become_text(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "answer": i if i % 2 else str(i)} for i in range(6)]
    files: dict[str, str | list[str]] = {"train": _jsonl(tmp_path / "qa.jsonl", rows, gap="\n")}
    task = FileTask("qa", data_files=files, validation_size=2, cache_dir=str(tmp_path / "c")).load()
    answers = [*task.train["answer"], *task.validation["answer"]]
    assert sorted(answers) == [str(i) for i in range(6)]


def test_preference_files_are_checked_for_utf8(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match=r"PreferenceFileTask 'p': file .*prefs.jsonl', line 2 is"):
        PreferenceFileTask("p", data_files=str(path), cache_dir=str(tmp_path / "c")).load()


def test_empty_answers_warn_for_rewards_that_do_not_read_them() -> None:
    """A prompt-only RL task (length or format reward) may leave answers empty; null is an error."""
    from datasets import Dataset

    from gradbal.tasks import Task, check_rows

    def length_reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        return [float(len(c)) for c in completions]

    split = Dataset.from_dict({"prompt": ["q1", "q2"], "answer": ["", " "]})
    with pytest.warns(
        UserWarning, match=r"Task 'free': 4 rows have an empty answer, the first row 1"
    ):
        check_rows(Task("free", train=split, validation=split, reward=length_reward))
    nulls = Dataset.from_dict({"prompt": ["q1", "q2"], "answer": ["a", None]})
    with pytest.raises(ValueError, match=r"row 2 of the train split has a null answer"):
        check_rows(Task("free", train=nulls, validation=nulls, reward=length_reward))
