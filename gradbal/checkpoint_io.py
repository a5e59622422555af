"""AtomicCheckpointIO: a kill while saving leaves the previous checkpoint file intact.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction: for a local path it writes
a temporary file in the *system* temp directory, never fsyncs it, then ``shutil.move``s it. When
the temp directory is on another file system (``/tmp`` on tmpfs, a cluster's node-local disk)
that move is a copy onto the target path, so a kill during it leaves a truncated checkpoint under
the real name, and a power loss can leave an empty one even on the same file system.

This plugin writes ``.<name>.tmp-<pid>`` in the target's own directory, fsyncs it, renames it
over the target (``os.replace``, atomic on POSIX) and fsyncs the directory. Remote paths
(``s3://``...) keep Lightning's behaviour. ``gradbal fit`` uses it unless the config names a
``CheckpointIO`` plugin.

Example::

    >>> from lightning.pytorch import Trainer
    >>> trainer = Trainer(plugins=[AtomicCheckpointIO()], logger=False)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from gradbal.callbacks.checkpoint_files import record_write

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are temp file + fsync + rename."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}. "
                "Remove them from the save_checkpoint call."
            )
        target = os.path.abspath(str(path).removeprefix("file://"))
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, f".{os.path.basename(target)}.tmp-{os.getpid()}")
        try:
            with open(temp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            if os.path.exists(temp):
                os.remove(temp)  # our own partial file
            raise
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the rename itself survives a power loss
        finally:
            os.close(descriptor)
        record_write(target)
