"""Checkpoints without frozen weights, end to end: kill -9, SIGTERM and resume stay bit-exact.

A LoRA run's checkpoints (``last.ckpt``, ``on_exception.ckpt``) hold the adapters, the optimizer
state and a fingerprint of the frozen base instead of the base itself; resume rebuilds the base
from the policy, checks the fingerprint and continues exactly as an uninterrupted run. The
kill -9 runs the real ``gradbal fit`` in a child process (``_fault_child.py``), as
test_resume.py does; the rest runs in-process.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from safetensors.torch import load_file

from gradbal.cli import cli
from gradbal.modules import GRPOModule
from gradbal.modules._frozen_state import FROZEN_KEY, FrozenWeightsError
from gradbal.modules._policy_module import load_checkpoint_weights, save_checkpoint_weights
from tests.integration._errors_doc import check_doc_rows
from tests.integration.test_real_model import _missing
from tests.integration.test_resume import ROOT, child, fit_args, run_dir

TINY_DPO = ROOT / "configs" / "debug" / "tiny_dpo.yaml"
LORA = """\
model:
  init_args:
    policy:
      class_path: gradbal.models.TinyPolicy
      init_args:
        hidden_size: 32
        num_layers: 1
        lora: {class_path: gradbal.models.LoRA, init_args: {r: 4}}
"""


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)  # type: ignore[no-any-return]


def lora_args(tmp_path: Path, root: str, max_steps: int, *extra: str) -> list[str]:
    overlay = tmp_path / "lora.yaml"
    overlay.write_text(LORA)
    export = f"--trainer.callbacks.dirpath={tmp_path / root / 'hf'}"
    callbacks = ["--trainer.callbacks+=gradbal.callbacks.SavePretrained", export]
    return [*fit_args(tmp_path / root, max_steps, "--config", str(overlay)), *callbacks, *extra]


def test_lora_checkpoints_leave_out_the_base_and_kill_sigterm_resume_is_bit_exact(
    tmp_path: Path,
) -> None:
    cli(lora_args(tmp_path, "ref", 6))
    expected = load(run_dir(tmp_path / "ref") / "last.ckpt")
    state = expected["state_dict"]
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    assert expected[FROZEN_KEY]["names"] == 12

    sigterm = ["--trainer.callbacks+=tests.integration.test_faults.SigtermAt"]
    args = lora_args(tmp_path, "run", 6, *sigterm, "--trainer.callbacks.step=4")  # one run id
    killed = child("kill_after_step", 3, args)  # last.ckpt (step 2) left by a kill -9
    assert killed.returncode == -9, killed.stderr[-2000:]
    directory = run_dir(tmp_path / "run")
    assert load(directory / "last.ckpt")["global_step"] == 2
    with pytest.raises(SIGTERMException):  # resumes at 2, stopped after 4: a fault checkpoint
        cli(args)
    fault = load(directory / "on_exception.ckpt")
    assert fault["global_step"] == 4 and fault[FROZEN_KEY] == expected[FROZEN_KEY]
    assert fault["state_dict"].keys() == state.keys()

    cli(args)  # the same command resumes the newest (on_exception.ckpt) and finishes
    final = load(directory / "last.ckpt")
    assert final["global_step"] == 6 and final[FROZEN_KEY] == expected[FROZEN_KEY]
    assert final["state_dict"].keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(final["state_dict"][name], value), name
    merged, merged_ref = (
        load_file(directory.parents[1] / "hf" / "model.safetensors"),
        load_file(tmp_path / "ref" / "hf" / "model.safetensors"),
    )
    assert merged.keys() == merged_ref.keys() and "lm_head.weight" in merged  # a full model
    for name, value in merged_ref.items():
        assert torch.equal(merged[name], value), name

    # save_frozen_weights=True: self-contained files, in the same run directory (same run id).
    cli(
        [
            *args,
            "--trainer.max_steps=7",
            "--model.init_args.policy.init_args.save_frozen_weights=true",
        ]
    )
    assert run_dir(tmp_path / "run") == directory
    whole = load(directory / "last.ckpt")
    assert whole["global_step"] == 7 and FROZEN_KEY not in whole
    assert len(whole["state_dict"]) == len(state) + 12

    # Another base (TinyPolicy seed) than the checkpoint's: K01, both fingerprints shown.
    other = [
        *args,
        "--model.init_args.policy.init_args.seed=1",
        f"--ckpt_path={directory / 'on_exception.ckpt'}",
    ]
    with pytest.raises(FrozenWeightsError, match=expected[FROZEN_KEY]["fingerprint"]):
        cli(other)


def test_dpo_full_fine_tuning_leaves_out_only_its_frozen_reference_copy(tmp_path: Path) -> None:
    def args(root: str, steps: int) -> list[str]:
        return fit_args(tmp_path / root, steps, config=TINY_DPO)

    cli(args("ref", 4))
    cli(args("run", 2))
    half = load(run_dir(tmp_path / "run") / "last.ckpt")
    keys = half["state_dict"].keys()
    assert keys and all(k.startswith("model.") for k in keys)  # every trained weight
    assert half[FROZEN_KEY]["names"] == len(keys)  # the reference: a frozen copy of the policy
    cli(args("run", 4))  # same run id: resumes at 2
    final, expected = (load(run_dir(tmp_path / d) / "last.ckpt") for d in ("run", "ref"))
    assert final["global_step"] == 4 and final.keys() == expected.keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name


def test_tiny_full_fine_tuning_checkpoints_are_unchanged(tmp_path: Path) -> None:
    run = cli(fit_args(tmp_path, 1))
    checkpoint = load(run_dir(tmp_path) / "last.ckpt")
    assert FROZEN_KEY not in checkpoint
    assert checkpoint["state_dict"].keys() == run.model.state_dict().keys()


@pytest.mark.skipif(_missing() is not None, reason=f"real model not installed: {_missing()}")
def test_smollm2_lora_checkpoint_weights_are_the_adapters_and_the_base_is_rebuilt() -> None:
    from gradbal.models import LoRA, PretrainedPolicy

    def module() -> GRPOModule:
        policy = PretrainedPolicy("smollm2-135m-instruct", dtype="float32", lora=LoRA(r=16))
        built = GRPOModule(policy)
        built.configure_model()
        return built

    saved = module()
    checkpoint = {"state_dict": saved.state_dict()}
    save_checkpoint_weights(saved, saved.policy_source, checkpoint)
    names = {k for k in saved.state_dict() if k not in checkpoint["state_dict"]}
    assert "model.base_model.model.lm_head.weight" in names  # tied to embed_tokens: both names
    assert "model.base_model.model.model.embed_tokens.weight" in names
    adapters = sum(t.numel() for t in checkpoint["state_dict"].values())
    assert adapters == sum(p.numel() for p in saved.parameters() if p.requires_grad)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    assert buffer.tell() < 4 * adapters + 2**20  # the adapters in float32, not the 540 MB base

    fresh = module()  # the GGUF cache loaded again: the same fingerprint
    load_checkpoint_weights(fresh, checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)


def test_doc_table_matches_the_rows() -> None:
    check_doc_rows("K", {"K01": FrozenWeightsError, "K02": FrozenWeightsError})
