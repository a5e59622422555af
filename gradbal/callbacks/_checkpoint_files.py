"""Old private name of :mod:`gradbal.callbacks.checkpoint_files`, kept for ``gradbal/resume.py``.

Import :mod:`gradbal.callbacks.checkpoint_files` instead; this alias goes once ``resume.py``
does (``tests/unit/test_layering.py`` lists it as the one known exception).
"""

from gradbal.callbacks.checkpoint_files import (
    checkpoint_step,
    newest_valid,
    read_checkpoint,
    record_write,
    save_target,
    written_here,
)

__all__ = [
    "checkpoint_step",
    "newest_valid",
    "read_checkpoint",
    "record_write",
    "save_target",
    "written_here",
]
