"""Reading docs/errors.md's tables, so each table's test can keep its rows in step with the doc.

Each section of docs/errors.md owns one id prefix (``E`` for the first table, other letters for
later sections), and the test of that section compares ``doc_rows(prefix)`` with its own cases.
"""

from __future__ import annotations

import re
from pathlib import Path

import lightning.pytorch as pl

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def doc_rows(prefix: str = "E") -> dict[str, str]:
    """Row id -> the "what you get" cell (the last one) of every ``| <prefix>NN |`` row."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(rf"\|\s*({re.escape(prefix)}\d+)\s*\|", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows[match.group(1)] = cells[-1]
    return rows


def check_doc_rows(prefix: str, expected: dict[str, type[BaseException] | type[Warning]]) -> None:
    """Fail unless the doc's ``prefix`` rows are exactly ``expected``'s ids, in order, with types.

    ``expected`` maps ids (``<prefix>01``, ``<prefix>02``...) to the exception or warning class
    the row's "what you get" cell must start with (in backticks).
    """
    documented = doc_rows(prefix)
    assert list(documented) == list(expected), f"docs/errors.md {prefix}-rows and the test differ"
    ids = [f"{prefix}{i:02d}" for i in range(1, len(expected) + 1)]
    assert list(expected) == ids, f"ids must be {prefix}01..{prefix}{len(expected):02d}"
    for row_id, got in documented.items():
        name = expected[row_id].__name__
        assert got.startswith(f"`{name}`"), f"{row_id}: doc says {got!r}, the test expects {name}"


def assert_documented(message: str, prefix: str, row: str) -> None:
    """Fail unless every piece of ``row``'s "what you get" cell between its ``…`` (where the doc
    abbreviates) appears in ``message``, in order."""
    documented = doc_rows(prefix)[row].split(": ", 1)[1].strip("`")
    position = 0
    for piece in documented.split("…"):
        found = message.find(piece.strip(), position)
        assert found >= 0, (piece, message)
        position = found + len(piece.strip())


class FitStarted(pl.Callback):
    """Records that training got past setup (an error raised at setup must stop it before).
    Reset ``FitStarted.started = False`` before each fit."""

    started = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        FitStarted.started = True
