"""docs/errors.md "Data and sampling checks" (D-rows): bad rows and sampling settings, refused
before step 0 (or, for divergence, with the cause named), each message naming task, file, row.

One parametrised test per row, with the row's id (``D01``...); ``test_doc_rows`` keeps the doc
section and this file in step. Rows about files give the 1-based line a user sees in an editor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.nonfinite_loss import NonFiniteLossError
from gradbal.tasks import Addition, FileTask, Reverse, TaskSource
from tests.integration._errors_doc import check_doc_rows

GOOD = [{"prompt": f"add {i}+{i}=", "answer": str(2 * i)} for i in range(8)]
LONG = "x" * 120  # 120 byte-level tokens: over 64 positions


@dataclass(frozen=True)
class Row:
    """A bad input (``run``, given a fresh directory), its type, and message fragments."""

    run: Callable[[Path], object]
    expected: type[BaseException] | type[Warning]
    fragments: tuple[str, ...]


def write(path: Path, lines: Sequence[bytes | dict[str, Any]]) -> str:
    """A JSONL file: dicts are dumped one per line, bytes are written as they are."""
    with path.open("wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")
    return str(path)


def qa_task(tmp: Path, line3: bytes | dict[str, Any]) -> FileTask:
    """Task ``qa`` reading train.jsonl (``line3`` as its line 3) and a clean val.jsonl."""
    train = write(tmp / "train.jsonl", [*GOOD[:2], line3, *GOOD[2:]])
    return FileTask(
        "qa",
        data_files={"train": train, "validation": write(tmp / "val.jsonl", GOOD[:2])},
        cache_dir=str(tmp / "cache"),
    )


def setup_dm(tmp: Path, line3: bytes | dict[str, Any]) -> None:
    MultiTaskDataModule([qa_task(tmp, line3)], batch_size=2).setup("fit")


def fit(tmp: Path, module: GRPOModule, dm: MultiTaskDataModule, steps: int = 1) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        default_root_dir=tmp,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm)
    return trainer


def fit_long_prompt(tmp: Path, family: str = "gpt2", **module_kwargs: Any) -> None:
    """GRPO on task ``qa`` whose train.jsonl line 3 is a 120-token prompt; 64 positions."""
    policy = TinyPolicy(family=family, hidden_size=32, num_layers=1, max_position_embeddings=64)  # type: ignore[arg-type]
    module_kwargs.setdefault("max_new_tokens", 8)
    module = GRPOModule(policy, num_generations=2, **module_kwargs)
    dm = MultiTaskDataModule([qa_task(tmp, {"prompt": LONG, "answer": "1"})], batch_size=2)
    fit(tmp, module, dm)


def diverge(tmp: Path) -> None:
    """lr=1e10: the first step makes the weights huge, the next sampling meets NaN logits."""
    optimizer = lambda params: torch.optim.AdamW(params, lr=1e10)  # noqa: E731
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1), optimizer, num_generations=2, max_new_tokens=4
    )
    fit(tmp, module, MultiTaskDataModule([Addition(n_train=8, n_val=2)], batch_size=2), steps=3)


def identical_groups(tmp: Path) -> None:
    """An untrained tiny model at the lowest accepted temperature samples greedily."""
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        num_generations=2,
        max_new_tokens=3,
        temperature=1e-3,
        identical_groups_patience=2,
    )
    fit(tmp, module, MultiTaskDataModule([Addition(n_train=8, n_val=2)], batch_size=2), steps=2)


def policy() -> TinyPolicy:
    return TinyPolicy(hidden_size=32, num_layers=1)


LINE3 = ("Task 'qa'", "train.jsonl', line 3")
ROWS: dict[str, Row] = {
    "D01": Row(
        lambda tmp: setup_dm(tmp, {"prompt": "add 9+9=", "answer": None}),
        ValueError,
        (*LINE3, "has a null answer", "fill in or delete that row"),
    ),
    "D02": Row(
        lambda tmp: setup_dm(tmp, {"prompt": None, "answer": "1"}),
        ValueError,
        (*LINE3, "has a null prompt"),
    ),
    "D03": Row(
        lambda tmp: setup_dm(tmp, {"prompt": "  ", "answer": "1"}),
        ValueError,
        (*LINE3, "has an empty prompt '  '"),
    ),
    "D04": Row(
        lambda tmp: setup_dm(tmp, b'{"prompt": "caf\xe9", "answer": "1"}\n'),
        ValueError,
        ("FileTask 'qa'", *LINE3[1:], "is not valid UTF-8", "column 16", "iconv"),
    ),
    "D05": Row(
        lambda tmp: setup_dm(tmp, b'{"prompt": "add 1+1=", "answer": \n'),
        ValueError,
        ("FileTask 'qa'", *LINE3[1:], "is not valid JSON (Expecting value at column 34)"),
    ),
    "D06": Row(
        lambda tmp: setup_dm(tmp, {"prompt": "add 1+1=", "answer": [2]}),
        ValueError,
        ("FileTask 'qa'", *LINE3[1:], "has a list as answer ([2])", "must be text"),
    ),
    "D07": Row(
        lambda tmp: fit_long_prompt(tmp, max_prompt_length=32, prompt_truncation="error"),
        ValueError,
        (*LINE3, "(120 tokens) is longer than max_prompt_length=32", "prompt_truncation: left"),
    ),
    "D08": Row(
        lambda tmp: fit_long_prompt(tmp, max_prompt_length=32),
        UserWarning,
        (*LINE3, "1 of 9 train prompts are longer than max_prompt_length=32", "lose their start"),
    ),
    "D09": Row(
        lambda tmp: fit_long_prompt(tmp, "gpt2"),
        ValueError,
        (
            *LINE3,
            "prompt of 120 tokens",
            "128 positions, but the model has 64",
            "Set max_prompt_length: 56",
        ),
    ),
    "D10": Row(
        lambda tmp: fit_long_prompt(tmp, "llama", max_prompt_length=60),
        ValueError,
        (*LINE3, "cut to 60 by max_prompt_length", "68 positions, but the model has 64"),
    ),
    "D11": Row(
        lambda tmp: GRPOModule(policy(), top_p=0.0),
        ValueError,
        ("top_p must be in (0, 1], got 0.0", "GRPO learns nothing"),
    ),
    "D12": Row(
        lambda tmp: GRPOModule(policy(), temperature=1e-8),
        ValueError,
        ("temperature=1e-08 samples greedily", "temperature >= 0.001"),
    ),
    "D13": Row(
        lambda tmp: GRPOModule(policy(), top_k=1),
        ValueError,
        ("top_k must be >= 2, or null / 0 (off), got 1",),
    ),
    "D14": Row(
        identical_groups,
        RuntimeWarning,
        ("Task 'addition'", "identical for 2 consecutive steps", "raise temperature"),
    ),
    "D15": Row(
        diverge,
        NonFiniteLossError,
        ("logits are NaN or infinite while sampling completions", "(lr=1e+10)"),
    ),
}


@pytest.mark.parametrize("row_id", list(ROWS))
def test_error(row_id: str, tmp_path: Path) -> None:
    row = ROWS[row_id]
    if issubclass(row.expected, Warning):
        with pytest.warns(row.expected) as record:
            row.run(tmp_path)
        message = "\n".join(str(w.message) for w in record)
    else:
        with pytest.raises(row.expected) as info:
            row.run(tmp_path)
        message = str(info.value)
    missing = [fragment for fragment in row.fragments if fragment not in message]
    assert not missing, f"{row_id}: {missing} not found in:\n{message}"


def test_doc_rows() -> None:
    check_doc_rows("D", {row_id: row.expected for row_id, row in ROWS.items()})


def test_distinct_frac_is_logged_per_task(tmp_path: Path) -> None:
    module = GRPOModule(policy(), num_generations=4, max_new_tokens=4)
    tasks: list[TaskSource] = [Addition(n_train=8, n_val=2), Reverse(n_train=8, n_val=2)]
    trainer = fit(tmp_path, module, MultiTaskDataModule(tasks, batch_size=4))
    for name in ("addition", "reverse"):
        value = float(trainer.callback_metrics[f"train/distinct_frac/{name}"])
        assert 0.25 <= value <= 1.0  # 1/G (all the same) to 1 (all differ)
