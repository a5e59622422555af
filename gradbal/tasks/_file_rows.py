"""Rows of local data files as a user sees them: text checks before loading, and where a row is.

``datasets`` reads JSON lines with pyarrow, whose errors name a byte position but no file or
line, and it drops the link between a loaded row and its line. :func:`check_text_files` checks
the files' text (UTF-8, and on a read failure each JSON line) and names the file and line;
:class:`RowOrigins` says, for a row of a loaded split, which file and line it came from.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

_TEXT_FORMATS = ("json", "csv")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def expand(paths: list[str]) -> list[str]:
    """Local paths with globs expanded (sorted, as ``datasets`` orders them); URLs dropped."""
    out: list[str] = []
    for path in paths:
        if "://" in path:
            continue
        out.extend(sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path])
    return out


def _plain_text(path: str) -> bool:
    return not path.lower().endswith(_COMPRESSION) and Path(path).is_file()


def _preview(data: bytes, limit: int = 120) -> str:
    text = data.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_utf8(owner: str, files: dict[str, list[str]], fmt: str) -> None:
    """Raise ValueError naming the file and line of the first byte sequence that is not UTF-8.

    ``owner`` starts the message, e.g. ``"FileTask 'qa'"``.

    Only uncompressed local JSON and CSV files are read (one pass over their bytes).
    """
    if fmt not in _TEXT_FORMATS:
        return
    for path in expand([p for paths in files.values() for p in paths]):
        if _plain_text(path) and not _is_utf8(path):
            _raise_first_bad_line(owner, path)


def _is_utf8(path: str, chunk: int = 1 << 24) -> bool:
    """One streaming pass (16 MiB at a time): never the whole file in memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        try:
            while block := f.read(chunk):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _raise_first_bad_line(owner: str, path: str) -> None:
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{owner}: file {path!r}, line {line_no} is not valid UTF-8 (byte "
                    f"{line[err.start : err.start + 1]!r} at column {err.start + 1}): "
                    f"{_preview(line)}. Re-save the file as UTF-8 (e.g. iconv -f latin1 -t "
                    f"utf-8), or fix or delete that line."
                ) from None
    raise ValueError(f"{owner}: file {path!r} is not valid UTF-8 (it ends mid-character).")


def find_bad_json_line(path: str) -> str | None:
    """What is wrong with the first bad line of a JSON-lines file, naming it; None if none is.

    A line is bad if it is not valid JSON or not a JSON object.
    """
    if not _plain_text(path):
        return None
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        return None  # one JSON document (a list of rows), not JSON lines
    try:
        json.loads(text)
        return None  # one valid JSON document: its problem is not a line
    except json.JSONDecodeError:
        pass
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"file {path!r}, line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            return f"{where} is not valid JSON ({err.msg} at column {err.colno}): {line[:120]!r}"
        if not isinstance(row, dict):
            return (
                f"{where} is a JSON {type(row).__name__}, not an object of columns: {line[:120]!r}"
            )
    return None


@dataclass
class _FileRowIndex:
    """For one split's files: each file's rows as (path, 1-based line or None), built lazily."""

    paths: list[str]
    fmt: str
    _rows: list[tuple[str, int | None, int]] | None = field(default=None, repr=False)

    def rows(self) -> list[tuple[str, int | None, int]]:
        """(path, line, row number within the file) per loaded row, in loading order."""
        if self._rows is None:
            self._rows = [row for path in expand(self.paths) for row in _file_rows(path, self.fmt)]
        return self._rows


def _file_rows(path: str, fmt: str) -> list[tuple[str, int | None, int]]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = pq.read_metadata(path).num_rows
        return [(path, None, i + 1) for i in range(n)]
    if not _plain_text(path):
        return []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        out: list[tuple[str, int | None, int]] = []
        start = 1
        for index, record in enumerate(reader):
            if index > 0 and record:  # the header is not a row; pandas skips blank lines
                out.append((path, start, len(out) + 1))
            start = reader.line_num + 1
        return out
    if text.lstrip().startswith("["):
        n = len(json.loads(text))
        return [(path, None, i + 1) for i in range(n)]
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return [(path, line, k + 1) for k, line in enumerate(lines)]


class RowOrigins:
    """Says where row ``i`` of a task's ``train`` or ``validation`` split came from.

    Built by :class:`~gradbal.tasks.FileTask` and passed to ``Task(describe_row=...)``: each
    final split maps its rows to rows of a loaded (raw) split, whose files are read again, only
    when a row must be named, to find the file and line.

    Args:
        files: raw split name -> its data files (empty for a Hub dataset).
        fmt: the files' format.
        origins: final split (``train``/``validation``) -> (raw split, raw row per final row).
    """

    def __init__(
        self, files: dict[str, list[str]], fmt: str, origins: dict[str, tuple[str, list[int]]]
    ) -> None:
        self.files = {split: _FileRowIndex(paths, fmt) for split, paths in files.items()}
        self.origins = origins

    def __call__(self, split: str, index: int) -> str:
        raw_split, raw_rows = self.origins[split]
        raw = raw_rows[index]
        located = self.files.get(raw_split)
        rows = located.rows() if located is not None else []
        if raw >= len(rows):  # a Hub dataset, compressed files: no line to name
            return f"row {raw + 1} of the {raw_split!r} split as loaded"
        path, line, number = rows[raw]
        return f"file {path!r}, " + (f"line {line}" if line is not None else f"row {number}")
