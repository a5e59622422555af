"""The continual-learning pieces live in gradbal.continual; the old import paths (and so the
``class_path`` values of existing configs) still name the same classes."""

from __future__ import annotations

import importlib

import pytest

import gradbal.continual as continual


@pytest.mark.parametrize(
    "old",
    [
        "gradbal.modules.OnlineContinualModule",
        "gradbal.modules.GSA",
        "gradbal.modules.ER",
        "gradbal.modules.FineTune",
        "gradbal.datamodules.ClassIncrementalDataModule",
        "gradbal.datamodules.ReservoirBuffer",
    ],
)
def test_old_class_paths_name_the_same_classes(old: str) -> None:
    package, name = old.rsplit(".", 1)
    assert getattr(importlib.import_module(package), name) is getattr(continual, name)
    assert getattr(continual, name).__module__.startswith("gradbal.continual.")
