"""The README's commands and YAML example are real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from gradbal.callbacks import TaskGradNormMonitor
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


def test_readme_own_project_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.split("## Per-task gradient norms in your own Lightning project", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)  # lightning_logs/ goes here
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    monitor = namespace["monitor"]
    assert isinstance(monitor, TaskGradNormMonitor) and monitor.stats is not None
    norms = monitor.stats.norm
    assert norms.shape == (3,) and bool(torch.isfinite(norms).all())
    logged = {p.name for p in (tmp_path / "lightning_logs").rglob("events.out.tfevents.*")}
    assert logged


def test_readme_grad_norm_by_hand_matches_the_logged_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's by-hand computation of ``train/grad_norm/<task>`` equals what the monitor
    logs (the snippet asserts it per task; run after the drop-in example it builds on)."""
    section = README.split("## Per-task gradient norms in your own Lightning project", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2 and "by_hand" in blocks[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    for name in ("easy", "medium", "hard"):
        assert f"{name}: by hand" in printed
    monitor = namespace["monitor"]
    assert isinstance(monitor, TaskGradNormMonitor) and monitor.estimator == "all_pairs"
    assert monitor.stats is not None and bool(monitor.stats.valid.all())


def test_readme_mid_epoch_mixture_example_changes_the_batches_within_the_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's TaskMixtureSampler DataModule (run after the drop-in example it continues):
    the scheduler's probabilities reach the sampler mid-epoch, and with a rule that keeps only
    one task, the batches after the update hold only that task."""
    import lightning.pytorch as pl

    drop_in = README.split("## Per-task gradient norms in your own Lightning project", 1)[1]
    mixture = README.split("## Changing the task mixture of your own DataModule mid-epoch", 1)[1]
    blocks = [re.search(r"```python\n(.*?)```", text, re.S) for text in (drop_in, mixture)]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for block in blocks:
        assert block is not None
        exec(compile(block.group(1), "README.md", "exec"), namespace)
    scheduler = namespace["scheduler"]
    probs = scheduler.probs  # type: ignore[attr-defined]
    assert probs is not None and max(abs(p - 1 / 3) for p in probs) > 1e-3  # it changed

    seen: list[list[int]] = []

    class Record(pl.Callback):  # records each batch's tasks; at step 2 sets what a scheduler would
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            seen.append(torch.bincount(batch[2], minlength=3).tolist())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            if batch_idx == 1:
                trainer.datamodule.set_sampling_probs([0.0, 0.0, 1.0])

    data = namespace["MixedTasks"]()  # type: ignore[operator]
    trainer = pl.Trainer(
        max_steps=8, callbacks=[Record()], logger=False, enable_checkpointing=False
    )
    trainer.fit(namespace["Classifier"](), data)  # type: ignore[operator]
    assert len(seen) == 8 and len(data.train_dataloader()) == 8  # all in one epoch
    assert all(c[0] > 0 and c[1] > 0 for c in seen[:2])  # uniform
    assert all(c[0] == 0 and c[1] == 0 for c in seen[2:])  # from the next batch on: only "hard"


def test_readme_skill_graph_snippet_builds() -> None:
    """The issue-15 part-3 snippet's callbacks build from their class_path (as LightningCLI does)."""
    import lightning.pytorch as pl
    from jsonargparse import ArgumentParser

    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "SkillGraphWeights" in b]
    assert len(blocks) == 1
    callbacks = yaml.safe_load(blocks[0])["trainer"]["callbacks"]
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    built = parser.instantiate_classes(
        parser.parse_args(["--callbacks", json.dumps(callbacks)])
    ).callbacks
    assert [type(c).__name__ for c in built] == ["RewardShortfallMonitor", "TaskSamplingScheduler"]
    rule = built[1].rule
    assert rule.graph == {"addition": ["countdown"]} and rule.statistic == "reward_shortfall"


def test_readme_reference_policy_block_builds() -> None:
    from jsonargparse import ArgumentParser

    from gradbal.modules import FrozenCopy, GRPOModule

    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "FrozenCopy" in b]
    assert len(blocks) == 1
    init = yaml.safe_load(blocks[0])["model"]["init_args"]
    init["policy"] = {"class_path": "gradbal.models.TinyPolicy", "init_args": {"hidden_size": 32}}
    parser = ArgumentParser()
    parser.add_class_arguments(GRPOModule, "model")
    module = parser.instantiate_classes(parser.parse_object({"model": init})).model
    assert isinstance(module.reference, FrozenCopy) and module.beta == 0.04
