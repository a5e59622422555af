"""Tests for FileTask: local JSONL/Parquet/CSV files, column mapping, templates and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradbal.tasks import FileTask, NumericMatch, score

ROWS = [{"question": f"{i}+{i}", "solution": str(2 * i), "level": i % 3} for i in range(20)]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _task(tmp_path: Path, **kwargs: Any) -> FileTask:
    return FileTask(cache_dir=str(tmp_path / "cache"), **kwargs)


def test_jsonl_with_mapping_template_and_carved_validation(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    source = _task(
        tmp_path,
        name="qa",
        data_files=path,
        column_mapping={"solution": "answer"},
        prompt_template="Q: {question}\nA:",
        validation_size=5,
    )
    task = source.load()
    assert (len(task.train), len(task.validation)) == (15, 5)
    assert set(task.train.column_names) == {"question", "answer", "level", "prompt"}
    row = task.train[0]
    assert row["prompt"] == f"Q: {row['question']}\nA:"
    assert not set(task.train["question"]) & set(task.validation["question"])
    assert source.load().validation.to_dict() == task.validation.to_dict()  # seeded carve
    other_seed = _task(
        tmp_path,
        name="qa",
        data_files=path,
        column_mapping={"solution": "answer"},
        prompt_template="Q: {question}\nA:",
        validation_size=5,
        seed=1,
    ).load()
    assert other_seed.validation["question"] != task.validation["question"]


def test_template_may_use_source_names_of_mapped_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    task = _task(
        tmp_path,
        name="qa",
        data_files=path,
        column_mapping={"question": "prompt", "solution": "answer"},
        prompt_template="{question} (level {level}) =",
        validation_size=2,
    ).load()
    assert task.train[0]["prompt"].endswith(f"(level {task.train[0]['level']}) =")


def test_parquet_with_both_splits_and_max_train_samples(tmp_path: Path) -> None:
    for split, rows in (("train", ROWS[:15]), ("val", ROWS[15:])):
        table = pa.Table.from_pylist(
            [{"prompt": r["question"], "answer": r["solution"]} for r in rows]
        )
        pq.write_table(table, tmp_path / f"{split}.parquet")
    task = _task(
        tmp_path,
        name="pq",
        data_files={"train": str(tmp_path / "train.parquet"), "val": str(tmp_path / "val.parquet")},
        validation_split="val",
        max_train_samples=10,
    ).load()
    assert (len(task.train), len(task.validation)) == (10, 5)
    assert set(task.train["prompt"]) < {r["question"] for r in ROWS[:15]}


def test_csv_numeric_answers_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "sums.csv"
    path.write_text("q,a\n" + "".join(f"{i}+1,{i + 1}\n" for i in range(10)))
    task = _task(
        tmp_path,
        name="sums",
        data_files=str(path),
        column_mapping={"q": "prompt", "a": "answer"},
        validation_size=3,
        reward=NumericMatch(),
    ).load()
    assert task.train.features["answer"].dtype == "string"
    assert task.train.features["prompt"].dtype == "string"  # CSV strings load as large_string
    rows = [{"answer": a} for a in task.validation["answer"]]
    prompts = task.validation["prompt"]
    assert score(task, prompts, [a + " done" for a in task.validation["answer"]], rows) == [1.0] * 3


def test_explicit_format_and_glob(tmp_path: Path) -> None:
    _jsonl(tmp_path / "part1.data", [{"prompt": "a", "answer": "b"}] * 3)
    _jsonl(tmp_path / "part2.data", [{"prompt": "c", "answer": "d"}] * 3)
    task = _task(
        tmp_path,
        name="g",
        data_files=str(tmp_path / "part*.data"),
        format="json",
        validation_size=1,
    ).load()
    assert len(task.train) + len(task.validation) == 6


def test_relative_path_not_found_shows_path_and_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=r"'data/train\.jsonl' not found.*current working directory: " + str(tmp_path),
    ):
        FileTask("x", data_files="data/train.jsonl").load()
    with pytest.raises(FileNotFoundError, match=r"matches no file"):
        FileTask("x", data_files="data/*.jsonl").load()


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl'\] are empty \(0 bytes\)"):
        _task(tmp_path, name="x", data_files=str(tmp_path / "empty.jsonl")).load()


def test_header_only_csv_is_empty(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("prompt,answer\n")
    with pytest.raises(ValueError, match=r"could not read .* as 'csv'.*at least one row"):
        _task(tmp_path, name="x", data_files=str(tmp_path / "h.csv")).load()


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello\n")
    with pytest.raises(ValueError, match=r"cannot infer the format of .*'\.txt'.*pass format="):
        _task(tmp_path, name="x", data_files=str(tmp_path / "data.txt")).load()


def test_missing_columns_after_mapping_suggest_column_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    with pytest.raises(
        ValueError,
        match=r"no 'prompt' column after column_mapping=\{'solution': 'answer'\}\. "
        r"Columns found: \['question', 'solution', 'level'\]\. Map one of them, e.g. column_mapping=",
    ):
        _task(tmp_path, name="x", data_files=path, column_mapping={"solution": "answer"}).load()
    with pytest.raises(ValueError, match=r"column_mapping names columns \['answer_text'\]"):
        _task(tmp_path, name="x", data_files=path, column_mapping={"answer_text": "answer"}).load()


def test_mapping_onto_an_existing_column(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", [{"prompt": "p", "answer": "a", "other": "o"}] * 5)
    with pytest.raises(ValueError, match=r"renames onto \['answer'\], which already exist"):
        _task(tmp_path, name="x", data_files=path, column_mapping={"other": "answer"}).load()


def test_template_errors(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", ROWS)
    with pytest.raises(
        ValueError, match=r"prompt_template uses fields \['quest'\].*Columns available"
    ):
        _task(
            tmp_path,
            name="x",
            data_files=path,
            prompt_template="{quest}",
            column_mapping={"solution": "answer"},
        ).load()
    with pytest.raises(ValueError, match=r"not a valid format string"):
        FileTask("x", data_files=path, prompt_template="Q: {question")
    with pytest.raises(ValueError, match=r"fields must name columns"):
        FileTask("x", data_files=path, prompt_template="Q: {}")


def test_missing_train_split_and_too_small_to_carve(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "qa.jsonl", [{"prompt": "p", "answer": "a"}] * 3)
    with pytest.raises(ValueError, match=r"no split 'training'.*Splits found: \['train'\]"):
        _task(tmp_path, name="x", data_files={"train": path}, train_split="training").load()
    with pytest.raises(ValueError, match=r"3 train rows are too few to carve validation_size=200"):
        _task(tmp_path, name="x", data_files=path).load()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"exactly one of data_files .* and hub_name"),
        ({"data_files": "a.jsonl", "hub_name": "org/ds"}, r"exactly one of"),
        ({"hub_name": "org/ds", "format": "json"}, r"format='json' only applies to data_files"),
        ({"data_files": "a.jsonl", "validation_size": 0}, r"validation_size must be >= 1"),
        (
            {"data_files": "a.jsonl", "max_train_samples": 0},
            r"max_train_samples must be None or >= 1",
        ),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FileTask("x", **kwargs)


def test_hub_name_while_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read the variables at import time, so patch their constants too: without
    # it the test would try the network (and retry for tens of seconds without one).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    source = _task(tmp_path, name="gsm", hub_name="gradbal-test/not-a-dataset")
    with pytest.raises(
        ConnectionError,
        match=r"Hub is unreachable \(HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 are set\).*data_files=",
    ) as info:
        source.load()
    assert info.value.__cause__ is not None


def test_hub_connection_failure_without_offline_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'org/ds' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        ConnectionError, match=r"Hub is unreachable \(Couldn't reach.*pass local files"
    ):
        _task(tmp_path, name="x", hub_name="org/ds").load()


def test_other_hub_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("BuilderConfig 'nope' not found")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(ValueError, match=r"BuilderConfig 'nope' not found"):
        _task(tmp_path, name="x", hub_name="org/ds", hub_config="nope").load()


def test_hub_dataset_dict_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = datasets.Dataset.from_dict({"prompt": ["p1", "p2"], "answer": ["a1", "a2"]})

    def fake(name: str, config: str | None, cache_dir: str | None) -> datasets.DatasetDict:
        assert (name, config) == ("org/ds", "main")
        return datasets.DatasetDict(train=split, test=split)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = _task(
        tmp_path, name="x", hub_name="org/ds", hub_config="main", validation_split="test"
    ).load()
    assert task.validation["prompt"] == ["p1", "p2"]


def test_malformed_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"could not read .* as 'json'") as info:
        _task(tmp_path, name="x", data_files=str(tmp_path / "bad.jsonl")).load()
    assert info.value.__cause__ is not None
