"""configs/toy/grpo_skill_graph.yaml runs through ``gradbal fit`` (a subprocess: the command a
user types): the task graph's names pass the check against the DataModule's tasks, the
reward-shortfall source measures every task, the scheduler reads it at each epoch end, and both
states are in the checkpoint.

The config's policy (runs/demo/sft_model) is swapped for a TinyPolicy (the byte-level toy) and
the run shortened to 4 steps of 2-step epochs; the callbacks are the file's. The untrained
policy solves nothing (every shortfall is 1), so the mixture moving and a resumed run
continuing it bit for bit are shown on a Trainer-level fit with rewards that differ by task
(tests/integration/test_mixing_rules_f.py), not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "configs/toy/grpo_skill_graph.yaml"
NAMES = ["addition", "countdown", "reverse", "sort", "count"]


def shortened(tmp_path: Path, max_steps: int) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]
    trainer |= {"max_steps": max_steps, "default_root_dir": str(tmp_path), "logger": False}
    trainer |= {"enable_progress_bar": False, "enable_model_summary": False}
    for cb in trainer["callbacks"]:
        if cb["class_path"].endswith("SavePretrained"):
            cb["init_args"]["dirpath"] = str(tmp_path / "model")
    model["policy"] = {
        "class_path": "gradbal.models.TinyPolicy",
        "init_args": {"hidden_size": 32, "num_layers": 1},
    }
    model |= {"num_generations": 2, "max_new_tokens": 4, "val_max_new_tokens": 4}
    data["init_args"] |= {"batch_size": 20, "steps_per_epoch": 2}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"grpo_skill_graph_{max_steps}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def gradbal_fit(tmp_path: Path, max_steps: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gradbal", "fit", "--config", str(shortened(tmp_path, max_steps))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (ckpt,) = (tmp_path / "checkpoints").rglob("last.ckpt")
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def test_skill_graph_config_runs_through_gradbal_fit(tmp_path: Path) -> None:
    checkpoint = gradbal_fit(tmp_path, 4)
    states = checkpoint["callbacks"]
    source = next(v for k, v in states.items() if k.startswith("RewardShortfallMonitor"))
    scheduler = next(v for k, v in states.items() if k.startswith("TaskSamplingScheduler"))
    assert source["measurement"]["step"] == 4 and all(source["measurement"]["valid"])
    assert all(-1e-9 <= v <= 1 + 1e-9 for v in source["measurement"]["values"])  # 1 - mean reward
    assert scheduler["task_names"] == NAMES and scheduler["ingested_step"] == 4
    assert scheduler["num_updates"] + scheduler["num_held"] == 2
    # the mixture is saved once, by the DataModule's TaskStream (the scheduler keeps no copy)
    probs = checkpoint["MultiTaskDataModule"]["probs"]
    assert len(probs) == 5 and abs(sum(probs) - 1) < 1e-9
