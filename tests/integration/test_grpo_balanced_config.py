"""The demo config configs/toy/grpo_balanced.yaml trains and logs the per-task curves it promises.

The config's policy (runs/demo/sft_model) is swapped for a TinyPolicy and the run is shortened;
everything else, callbacks included, is the file's.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradbal.cli import cli

CONFIG = Path(__file__).parents[2] / "configs/toy/grpo_balanced.yaml"


def shortened(tmp_path: Path) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]
    trainer |= {"max_steps": 4, "log_every_n_steps": 1, "default_root_dir": str(tmp_path)}
    trainer["enable_progress_bar"] = False
    callbacks = {cb["class_path"].rsplit(".", 1)[1]: cb["init_args"] for cb in trainer["callbacks"]}
    callbacks["TaskGradNormMonitor"]["every_n_steps"] = 1
    callbacks["LearningGainMonitor"]["window"] = 1
    callbacks["SavePretrained"]["dirpath"] = str(tmp_path / "model")
    model["policy"] = {
        "class_path": "gradbal.models.TinyPolicy",
        "init_args": {"hidden_size": 32, "num_layers": 1},
    }
    model |= {"num_generations": 2, "max_new_tokens": 4, "val_max_new_tokens": 4}
    data["init_args"] |= {"batch_size": 16, "steps_per_epoch": 2}
    path = tmp_path / "grpo_balanced.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_grpo_balanced_logs_grad_norms_sampling_probs_and_learning_gains(tmp_path: Path) -> None:
    run = cli(["fit", "--config", str(shortened(tmp_path))])
    assert run.trainer.global_step == 4
    names = run.datamodule.task_names
    ea = EventAccumulator(run.trainer.logger.log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for group in ("train/grad_norm", "train/sampling_prob", "train/learning_gain"):
        logged = {t.rsplit("/", 1)[1] for t in tags if t.rsplit("/", 1)[0] == group}
        assert logged and logged <= set(names), (group, logged)
    assert {f"train/sampling_prob/{n}" for n in names} <= tags
    assert "custom_scalars__config__" in ea.Tags()["tensors"]
    # TaskSamplingScheduler is the one emitter of train/sampling_prob/<task>: one value a step,
    # the DataModule's probabilities, which sum to 1.
    curves = [[e.value for e in ea.Scalars(f"train/sampling_prob/{n}")] for n in names]
    assert all(len(values) == 4 for values in curves)
    assert all(abs(sum(step) - 1) < 1e-5 for step in zip(*curves, strict=True))
