"""Tests for preference rows, PreferenceFileTask (text and conversational) and the DataModule path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gradbal.datamodules import MultiTaskDataModule
from gradbal.tasks import (
    PreferenceFileTask,
    check_preference_task,
    preference_row,
    preference_task,
    prompt_messages,
    score,
)

USER = [{"role": "user", "content": "Capital of France?"}]


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_text_row_with_explicit_prompt() -> None:
    row = preference_row({"prompt": "Q:", "chosen": " yes", "rejected": " no", "id": 3})
    assert row == {"prompt": "Q:", "chosen": " yes", "rejected": " no", "answer": " yes"}


def test_text_row_with_implicit_prompt_splits_the_common_prefix() -> None:
    row = preference_row(
        {"chosen": "Human: hi Assistant: hello", "rejected": "Human: hi Assistant: go"}
    )
    assert row["prompt"] == "Human: hi Assistant: "
    assert (row["chosen"], row["rejected"]) == ("hello", "go")


def test_conversational_row_keeps_prompt_messages_and_reply_text() -> None:
    system = [{"role": "system", "content": "Be brief."}]
    row = preference_row(
        {"prompt": system + USER, "chosen": _reply("Paris"), "rejected": _reply("Lyon")}
    )
    assert (row["chosen"], row["rejected"], row["answer"]) == ("Paris", "Lyon", "Paris")
    assert row["prompt"] == "system: Be brief.\nuser: Capital of France?\nassistant:"
    assert prompt_messages(row) == system + USER


def test_conversational_row_with_implicit_prompt() -> None:
    row = preference_row({"chosen": USER + _reply("Paris"), "rejected": USER + _reply("Rome")})
    assert row["prompt"] == "Capital of France?" and prompt_messages(row) == USER


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "q", "chosen": "a"}, "needs 'chosen' and 'rejected'"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, "identical chosen and rejected"),
        ({"prompt": "q", "chosen": "a", "rejected": _reply("b")}, "both be strings or both"),
        ({"prompt": USER, "chosen": "a", "rejected": "b"}, "string prompt"),
        ({"prompt": [], "chosen": _reply("a"), "rejected": _reply("b")}, "non-empty list"),
    ],
)
def test_malformed_rows_say_what_is_wrong(row: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        preference_row(row)


def test_file_task_text_with_mapping_and_validation_file(tmp_path: Path) -> None:
    rows = [{"q": f"{i}+{i}=", "good": str(2 * i), "bad": str(2 * i + 1)} for i in range(6)]
    task = PreferenceFileTask(
        "double",
        data_files={
            "train": _jsonl(tmp_path / "train.jsonl", rows[:4]),
            "validation": _jsonl(tmp_path / "val.jsonl", rows[4:]),
        },
        column_mapping={"q": "prompt", "good": "chosen", "bad": "rejected"},
        cache_dir=str(tmp_path / "cache"),
    ).load()
    assert (len(task.train), len(task.validation)) == (4, 2)
    assert task.train[1] == {"prompt": "1+1=", "chosen": "2", "rejected": "3", "answer": "2"}
    assert score(task, ["1+1="] * 2, ["2", "3"], [task.train[1]] * 2) == [1.0, 0.0]
    check_preference_task(task, "test")


def test_file_task_conversational_reaches_batches(tmp_path: Path) -> None:
    rows = [
        {"prompt": USER, "chosen": _reply(f"Paris {i}"), "rejected": _reply(f"Rome {i}")}
        for i in range(8)
    ]
    source = PreferenceFileTask(
        "capitals",
        data_files=_jsonl(tmp_path / "pairs.jsonl", rows),
        validation_size=2,
        cache_dir=str(tmp_path / "cache"),
    )
    dm = MultiTaskDataModule([source], batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    columns = batch["columns"][0]
    assert batch["answer"][0] == columns["chosen"] and columns["rejected"].startswith("Rome")
    assert prompt_messages(columns) == USER


def test_file_task_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of data_files"):
        PreferenceFileTask("x")
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "good": "a", "bad": "b"}] * 3)
    with pytest.raises(ValueError, match="'chosen' and 'rejected' columns"):
        PreferenceFileTask("x", data_files=path, validation_size=1).load()
    with pytest.raises(ValueError, match="too few to carve"):
        PreferenceFileTask(
            "x", data_files=path, column_mapping={"good": "chosen", "bad": "rejected"}
        ).load()


def test_preference_task_from_rows() -> None:
    rows = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    task = preference_task("tiny", rows, rows)
    assert task.validation[0]["answer"] == "4"
