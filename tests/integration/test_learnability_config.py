"""configs/toy/grpo_learnability.yaml runs through ``gradbal fit`` (a subprocess: the command a
user types): the learnability source measures every task, the scheduler reads it at each epoch
end, and both states are in the checkpoint.

The config's policy (runs/demo/sft_model) is swapped for a TinyPolicy and the run shortened to 4
steps of 2-step epochs; the callbacks are the file's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "configs/toy/grpo_learnability.yaml"


def shortened(tmp_path: Path) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]
    trainer |= {"max_steps": 4, "log_every_n_steps": 1, "default_root_dir": str(tmp_path)}
    trainer |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer["logger"] = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(tmp_path / "logs")},
    }
    for cb in trainer["callbacks"]:
        if cb["class_path"].endswith("SavePretrained"):
            cb["init_args"]["dirpath"] = str(tmp_path / "model")
    model["policy"] = {
        "class_path": "gradbal.models.TinyPolicy",
        "init_args": {"hidden_size": 32, "num_layers": 1},
    }
    model |= {"num_generations": 2, "max_new_tokens": 4, "val_max_new_tokens": 4}
    data["init_args"] |= {"batch_size": 20, "steps_per_epoch": 2}
    path = tmp_path / "grpo_learnability.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_learnability_sampling_config_runs_through_gradbal_fit(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "gradbal", "fit", "--config", str(shortened(tmp_path))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    names = ["addition", "countdown", "reverse", "sort", "count"]
    measured = {
        n: [(int(r["step"]), float(r[f"train/learnability/{n}"])) for r in rows
            if r.get(f"train/learnability/{n}")]
        for n in names
    }  # fmt: skip
    for name, values in measured.items():  # one per epoch, at the step that ends it
        assert [step for step, _ in values] == [2, 4], name
        assert all(0 <= v <= 0.25 for _, v in values), name  # p(1-p) of 0/1 rewards
    (ckpt,) = (tmp_path / "checkpoints").rglob("last.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = saved["callbacks"]
    source = next(v for k, v in state.items() if k.startswith("LearnabilityMonitor"))
    scheduler = next(v for k, v in state.items() if k.startswith("TaskSamplingScheduler"))
    assert source["measurement"]["step"] == 4 and all(source["measurement"]["valid"])
    assert scheduler["ingested_step"] == 4 and scheduler["num_updates"] + scheduler["num_held"] == 2
    # The probabilities in use are the DataModule's state, saved once (not in the scheduler's).
    probs = saved["MultiTaskDataModule"]["probs"]
    assert "probs" not in scheduler and "probs" not in saved["MultiTaskDataModule"]["sampler"]
    assert len(probs) == 5 and abs(sum(probs) - 1) < 1e-9
