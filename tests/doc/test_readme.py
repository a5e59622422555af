"""The README's commands and YAML example are real."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gradbal.cli import cli

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_yaml_example_parses(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", README, re.S)
    assert block is not None
    config = yaml.safe_load(block.group(1))
    config["trainer"] = {"default_root_dir": str(tmp_path)}
    path = tmp_path / "readme.yaml"
    path.write_text(yaml.safe_dump(config))
    run = cli(["--config", str(path)], run=False)
    assert [t.name for t in run.datamodule.sources] == ["gsm8k", "countdown"]
    assert run.datamodule.sampling_probs == [0.7, 0.3]


def test_readme_mentions_only_configs_that_exist() -> None:
    root = Path(__file__).parents[2]
    for name in set(re.findall(r"configs/[\w/]+\.yaml", README)):
        assert (root / name).exists(), name
