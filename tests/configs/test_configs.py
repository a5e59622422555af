"""Every YAML under configs/ parses and builds the classes it names with the CLI (nothing is
trained, no weights are loaded)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradbal.cli import cli

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 3


def _resolve(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _check_built(node: Any, built: Any, where: str) -> int:
    """Assert ``built`` is exactly the class ``node`` names, then recurse into the ``init_args``
    that the built object keeps under the same attribute name. Returns the classes checked."""
    expected = _resolve(node["class_path"])
    assert type(built) is expected, f"{where}: built {type(built).__name__}, YAML names {expected}"
    checked = 1
    for key, value in (node.get("init_args") or {}).items():
        children = value if isinstance(value, list) else [value]
        if not all(isinstance(c, dict) and "class_path" in c for c in children):
            continue
        attr = "sources" if key == "tasks" and hasattr(built, "sources") else key
        if not hasattr(built, attr):
            continue
        kept = getattr(built, attr)
        kept = list(kept) if isinstance(value, list) else [kept]
        assert len(kept) == len(children), f"{where}.{key}: {kept}"
        for i, (child, obj) in enumerate(zip(children, kept, strict=True)):
            checked += _check_built(child, obj, f"{where}.{key}[{i}]")
    return checked


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_builds_its_classes(path: Path, tmp_path: Path) -> None:
    """The CLI (``run=False``: nothing trained, no model weights loaded, since the policies load
    in ``configure_model``) builds exactly the classes the YAML names: model, data and its tasks,
    trainer callbacks and strategy, and the nested objects those keep (policy, objective, ...)."""
    run = cli(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    config = yaml.safe_load(path.read_text())
    checked = _check_built(config["model"], run.model, "model")
    checked += _check_built(config["data"], run.datamodule, "data")
    trainer = config.get("trainer") or {}
    for i, node in enumerate(trainer.get("callbacks") or []):
        matches = [c for c in run.trainer.callbacks if type(c) is _resolve(node["class_path"])]
        assert matches, f"trainer.callbacks[{i}]: no {node['class_path']} in the trainer"
        checked += _check_built(node, matches[0], f"trainer.callbacks[{i}]")
    if isinstance(trainer.get("strategy"), dict):
        checked += _check_built(trainer["strategy"], run.trainer.strategy, "trainer.strategy")
    assert checked >= 3  # model, data, and at least the periodic checkpoint


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_checkpoints_periodically(path: Path) -> None:
    """A long run of a shipped config survives a kill: it names its own periodic checkpoint
    (the CLI's fallback saves only every 100 steps / 30 minutes)."""
    callbacks = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("callbacks") or []
    paths = [c.get("class_path") for c in callbacks if isinstance(c, dict)]
    assert "gradbal.callbacks.PeriodicCheckpoint" in paths, f"{path.name}: {paths}"


def test_unknown_yaml_key_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    text = (Path(__file__).parents[2] / "configs/debug/tiny_grpo.yaml").read_text()
    bad.write_text(text.replace("num_generations: 4", "num_generation: 4"))
    with pytest.raises(SystemExit):
        cli(["--config", str(bad)], run=False)
    assert "num_generation" in capsys.readouterr().err
