"""Every YAML under configs/ parses and instantiates with the CLI (nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gradbal.cli import cli

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(path: Path, tmp_path: Path) -> None:
    run = cli(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert run.model is not None and run.datamodule is not None


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
