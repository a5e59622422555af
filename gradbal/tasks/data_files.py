"""Resolve FileTask's ``data_files``: per-split path lists, existence checks, format inference.

Shared by :class:`~gradbal.tasks.FileTask`, :class:`~gradbal.tasks.PreferenceFileTask` and
:class:`~gradbal.datamodules.ClassIncrementalDataModule` (so it is a public module).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

__all__ = ["check_exists", "infer_format", "split_files"]

_FORMATS = {
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def split_files(
    data_files: str | list[str] | dict[str, str | list[str]] | None, train_split: str
) -> dict[str, list[str]]:
    """Split name -> paths; a bare path or list belongs to ``train_split``."""
    if isinstance(data_files, dict):
        return {
            split: [str(paths)] if isinstance(paths, str) else [str(p) for p in paths]
            for split, paths in data_files.items()
        }
    if isinstance(data_files, (str, os.PathLike)):
        return {train_split: [str(data_files)]}
    return {train_split: [str(path) for path in data_files or []]}


def check_exists(name: str, path: str) -> None:
    """Raise FileNotFoundError (with path and cwd) or ValueError (empty file) for a bad path.

    URLs and fsspec paths (``://``) are left to ``datasets``; globs must match a file.
    """
    if "://" in path:
        return  # a URL or fsspec path; datasets reports its own errors
    is_glob = any(c in path for c in "*?[")
    matches = [Path(p) for p in glob.glob(path)] if is_glob else [Path(path)]
    if not is_glob and not matches[0].is_file():
        problem = "is not a file" if matches[0].exists() else "not found"
    elif not matches:
        problem = "matches no file"
    else:
        # datasets' JSON reader crashes with a bare StopIteration on an empty file.
        empty = [str(p) for p in matches if p.stat().st_size == 0]
        if empty:
            raise ValueError(
                f"FileTask {name!r}: data file(s) {empty} are empty (0 bytes). Fill them or "
                f"remove them from data_files."
            )
        return
    raise FileNotFoundError(
        f"FileTask {name!r}: data file {path!r} {problem} (resolved to {Path(path).resolve()}; "
        f"current working directory: {Path.cwd()}). Relative paths are resolved against the "
        f"working directory: pass an absolute path or run from the directory that holds the data."
    )


def infer_format(name: str, paths: list[str]) -> str:
    """The one ``datasets`` builder name for the suffixes of ``paths`` (after compression)."""
    formats = set()
    for path in paths:
        stem = path
        while stem.lower().endswith(_COMPRESSION):
            stem = stem[: stem.rfind(".")]
        suffix = Path(stem).suffix.lower()
        if suffix not in _FORMATS:
            raise ValueError(
                f"FileTask {name!r}: cannot infer the format of {path!r} from its suffix "
                f"{suffix!r}. Known suffixes: {sorted(_FORMATS)}. Rename the file or pass "
                f"format='json' | 'parquet' | 'csv'."
            )
        formats.add(_FORMATS[suffix])
    if len(formats) != 1:
        raise ValueError(
            f"FileTask {name!r}: data_files mix formats {sorted(formats)}; pass files of one "
            f"format (or convert them)."
        )
    return formats.pop()
