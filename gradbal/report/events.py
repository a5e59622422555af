"""Read a run's scalar curves from its TensorBoard event files, merged across versions."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator

EVENT_FILE_GLOB = "events.out.tfevents.*"

# Only scalars are read; 1 keeps the other reservoirs (images, histograms, ...) from filling up.
_SIZE_GUIDANCE = {
    event_accumulator.SCALARS: 0,  # 0: keep every point
    event_accumulator.TENSORS: 1,
    event_accumulator.HISTOGRAMS: 1,
    event_accumulator.COMPRESSED_HISTOGRAMS: 1,
    event_accumulator.IMAGES: 1,
    event_accumulator.AUDIO: 1,
}
_VERSION = re.compile(r"^version_(\d+)$")
_TIMESTAMP = re.compile(r"^events\.out\.tfevents\.(\d+)")


def find_event_files(path: str | os.PathLike[str]) -> list[Path]:
    """Every ``events.out.tfevents.*`` file under ``path``, in the order runs wrote them.

    Files are ordered by the Lightning version directory they sit in (``version_3`` before
    ``version_10``; files outside any ``version_*`` directory first), then by the creation
    timestamp in the file name, then by path.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Run directory {str(root)!r} does not exist.")
    if root.is_file():
        return [root]
    return sorted((p for p in root.rglob(EVENT_FILE_GLOB) if p.is_file()), key=_write_order)


def read_scalars(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``path`` -> its ``(step, value)`` points, sorted by step.

    ``path`` may be a Lightning ``default_root_dir`` (events under
    ``lightning_logs/version_*/``), one version directory, any directory (searched
    recursively) or a single event file. With several files (a resumed run writes a new
    version), files are merged in version order: a later value at the same step replaces an
    earlier one, and a tag's first step in a later file drops that tag's earlier points at or
    after it (the steps a crashed run logged after its last checkpoint, which the resumed run
    did again). Values are as logged, NaN included. Read with TensorBoard's own
    ``EventAccumulator``.

    Raises:
        FileNotFoundError: If ``path`` does not exist or holds no event file.

    Example::

        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as run:
        ...     with SummaryWriter(f"{run}/lightning_logs/version_0") as writer:
        ...         for step in range(3):
        ...             writer.add_scalar("train/reward/addition", step / 4, step)
        ...     read_scalars(run)
        {'train/reward/addition': [(0, 0.0), (1, 0.25), (2, 0.5)]}
    """
    files = find_event_files(path)
    if not files:
        raise FileNotFoundError(
            f"No TensorBoard event files ({EVENT_FILE_GLOB}) under {str(path)!r}. Pass a run's "
            "default_root_dir, one of its lightning_logs/version_* directories, or any "
            "directory that contains event files."
        )
    merged: dict[str, dict[int, float]] = {}
    for file in files:
        for tag, points in _file_scalars(file).items():
            series = merged.setdefault(tag, {})
            first = min(step for step, _ in points)
            for stale in [step for step in series if step >= first]:
                del series[stale]
            series.update(points)  # within a file, the last value at a step wins
    return {tag: sorted(series.items()) for tag, series in sorted(merged.items())}


def _file_scalars(file: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = event_accumulator.EventAccumulator(str(file), size_guidance=_SIZE_GUIDANCE)
    accumulator.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in accumulator.Tags()[event_accumulator.SCALARS]:
        points = [(int(e.step), float(e.value)) for e in accumulator.Scalars(tag)]
        if points:
            out[tag] = points
    return out


def _write_order(file: Path) -> tuple[int, int, str]:
    versions = [int(m.group(1)) for part in file.parts if (m := _VERSION.match(part))]
    stamp = _TIMESTAMP.match(file.name)
    return (versions[-1] if versions else -1, int(stamp.group(1)) if stamp else 0, str(file))
