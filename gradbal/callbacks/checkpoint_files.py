"""Checkpoint files: which ones load, which step they hold, which this process wrote.

Shared by :class:`~gradbal.callbacks.PeriodicCheckpoint`, :class:`~gradbal.callbacks.FaultCheckpoint`,
the checkpoint IO plugin and the CLI's automatic resume (so it is a public module). Two rules
protect a resume's source:

* a checkpoint is only ever replaced by one from a later step, or by this process's own file
  (:func:`save_target`);
* nothing is deleted unless this process wrote it and nobody replaced it since
  (:func:`written_here`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "checkpoint_step",
    "newest_valid",
    "read_checkpoint",
    "record_write",
    "save_target",
    "written_here",
]

# path -> (inode, mtime_ns) of each file this process saved, as it was right after saving.
_WRITTEN: dict[str, tuple[int, int]] = {}


def record_write(path: str | os.PathLike[str]) -> None:
    """Remember that this process just wrote ``path``."""
    stat = os.stat(path)
    _WRITTEN[os.path.abspath(path)] = (stat.st_ino, stat.st_mtime_ns)


def written_here(path: str | os.PathLike[str]) -> bool:
    """Whether this process wrote ``path`` and the file is still the one it wrote."""
    key = os.path.abspath(path)
    if key not in _WRITTEN:
        return False
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    return (stat.st_ino, stat.st_mtime_ns) == _WRITTEN[key]


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's dict, tensors memory-mapped (cheap even for large files).

    Raises:
        ValueError: if the file does not load (truncated, partial, not a checkpoint) or lacks
            ``state_dict`` / ``global_step``.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} does not load ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or not {"state_dict", "global_step"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict / global_step)")
    return checkpoint


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """``global_step`` of the checkpoint at ``path``; ``None`` if it is missing or does not load."""
    if not os.path.isfile(path):
        return None
    try:
        return int(read_checkpoint(path)["global_step"])
    except ValueError:
        return None


def save_target(path: str, step: int) -> str:
    """Where to save a step-``step`` checkpoint meant for ``path`` without destroying another.

    ``path`` itself unless it holds a checkpoint this process did not write from step ``step``
    or later (another run's, or the one this run resumed from); then the first of
    ``<stem>-2.ckpt``, ``<stem>-3.ckpt``... beside it that the same rule allows.
    """
    stem, ext = os.path.splitext(path)
    candidate, index = path, 2
    while not written_here(candidate) and (checkpoint_step(candidate) or -1) >= step:
        candidate, index = f"{stem}-{index}{ext}", index + 1
    return candidate


def newest_valid(directories: Iterable[str | os.PathLike[str]]) -> tuple[str, int] | None:
    """The checkpoint (path, step) with the highest step in ``directories`` that loads.

    Ties go to the newest file. Files that do not load (a partial write from an older tool, a
    truncated copy) are skipped with a warning; temporary files (``.*.tmp*``) are ignored.
    """
    found: list[tuple[int, int, str]] = []
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for candidate in sorted(Path(directory).glob("*.ckpt")):
            try:
                step = int(read_checkpoint(candidate)["global_step"])
            except ValueError as error:
                warnings.warn(f"Skipping a checkpoint that cannot resume: {error}", stacklevel=2)
                continue
            found.append((step, candidate.stat().st_mtime_ns, str(candidate)))
    if not found:
        return None
    step, _, path = max(found)
    return path, step
