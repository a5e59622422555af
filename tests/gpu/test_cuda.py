"""The paths users run on GPUs: CUDA tensors, bf16 autocast, device moves, deterministic resume.

Skipped without CUDA. Run on a GPU machine with ``pytest tests/gpu``; ``--gpu-tests-on=cpu``
runs the same checks on the CPU (bf16 autocast included) to check the tests themselves.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn

from gradbal.callbacks import TaskGradNormMonitor, TaskSamplingScheduler
from gradbal.datamodules import MultiTaskDataModule
from gradbal.gradstats import TaskGradCapture
from gradbal.models import LoRA, TinyPolicy
from gradbal.modules import DPOModule, GRPOModule
from gradbal.modules._generation import generate, step_rng
from gradbal.modules._sequences import tokenize_prompts
from gradbal.objectives import DPO, BalancedDPO
from gradbal.tasks import Addition, PreferenceArithmetic, PreferenceFormat, Reverse
from gradbal.weighting import InverseGradNorm
from tests.unit.gradstats._gradstats_helpers import batch, row_losses, tiny_model

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_capture_matches_brute_force_on_device(
    device: torch.device, dtype: torch.dtype, rtol: float
) -> None:
    """Per-task shares captured in one backward equal one autograd.grad per task."""
    model = tiny_model("llama", dtype=dtype).to(device)
    capture = TaskGradCapture(model, "last_attention_block")
    input_ids = batch(8).to(device)
    segments = torch.tensor([0, 1, 0, 2, 1, 2, 0, 1], device=device)
    with capture:
        losses = row_losses(model, input_ids)
        capture.set_segments(segments, 3)
        losses.sum().backward()
    shares = capture.segment_grads()
    assert all(s.device.type == device.type and s.dtype == torch.float32 for s in shares.values())
    params = dict(model.named_parameters())
    names = list(shares)
    losses = row_losses(model, input_ids)
    for s in range(3):
        grads = torch.autograd.grad(
            losses[segments == s].sum(), [params[n] for n in names], retain_graph=True
        )
        for name, g in zip(names, grads, strict=True):
            torch.testing.assert_close(shares[name][s], g.float(), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_shared_prefill_samples_the_same_tokens_on_device(
    device: torch.device, family: str
) -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, family=family, seed=1).build()  # type: ignore[arg-type]
    model = model.to(device)
    ids, mask = tokenize_prompts(tok, ["add 12+34=", "rev abcdef="], None, device)
    outs = []
    for share in (False, True):
        with step_rng(7, step=0, rank=0, device=device):
            outs.append(
                generate(model, tok, ids, mask, max_new_tokens=6, num_return_sequences=4,
                         top_k=20, share_prefill=share)
            )  # fmt: skip
    assert outs[0].device.type == device.type
    assert torch.equal(outs[0], outs[1])


def _grpo(lora: bool = False) -> GRPOModule:
    return GRPOModule(
        TinyPolicy(hidden_size=64, num_layers=2, family="llama", lora=LoRA(r=4) if lora else None),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        num_generations=4,
        max_new_tokens=6,
        beta=0.05 if lora else 0.0,
    )


def _grpo_dm() -> MultiTaskDataModule:
    tasks = [Addition(n_train=64, n_val=4), Reverse(n_train=64, n_val=4)]
    return MultiTaskDataModule(tasks, batch_size=6, steps_per_epoch=4, seed=3)


def _trainer(device: torch.device, root: Path, max_steps: int, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("logger", CSVLogger(root))
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        accelerator=accelerator(device),
        devices=1,
        max_steps=max_steps,
        limit_val_batches=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


class _Probe(pl.Callback):
    """Records where the parameters live and what the monitor measured, step by step."""

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.measured: list[list[float]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *a: Any
    ) -> None:
        self.devices |= {p.device.type for p in pl_module.parameters()}
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, TaskGradNormMonitor) and cb.stats is not None:
                valid = cb.stats.valid.bool().cpu()
                self.measured.append(cb.stats.unbiased_sq.float().cpu()[valid].tolist())


@pytest.mark.parametrize("lora", [False, True])
def test_grpo_bf16_with_monitor_and_scheduler(
    device: torch.device, tmp_path: Path, lora: bool
) -> None:
    pl.seed_everything(0)
    module, dm, probe = _grpo(lora), _grpo_dm(), _Probe()
    monitor = TaskGradNormMonitor(every_n_steps=1, seed=5)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5, floor=0.1)
    trainer = _trainer(device, tmp_path, 4, precision="bf16-mixed",
                       callbacks=[monitor, scheduler, probe])  # fmt: skip
    trainer.fit(module, dm)
    assert probe.devices == {device.type}
    assert trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in module.parameters())
    probs = dm.sampling_probs
    assert abs(sum(probs) - 1.0) < 1e-6 and min(probs) > 0
    assert all(math.isfinite(v) for step in probe.measured for v in step)


def _params(module: pl.LightningModule) -> dict[str, Tensor]:
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters()}


def test_grpo_resume_is_exact_in_deterministic_mode(
    device: torch.device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 steps == 2 steps, checkpoint, 2 more; bit for bit with deterministic kernels."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def run(root: Path, steps: int, ckpt: Path | None = None) -> tuple[GRPOModule, pl.Trainer]:
        pl.seed_everything(0)
        module = _grpo()
        checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
        trainer = _trainer(device, root, steps, deterministic=True, enable_checkpointing=True,
                           callbacks=[TaskGradNormMonitor(every_n_steps=1, seed=5), checkpoint])  # fmt: skip
        trainer.fit(module, _grpo_dm(), ckpt_path=ckpt)
        return module, trainer

    full, _ = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed, trainer = run(tmp_path / "part2", 4, ckpt=tmp_path / "part" / "last.ckpt")
    assert trainer.global_step == 4
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a), "resume differs from the uninterrupted run"


@pytest.mark.parametrize("objective", [DPO(beta=0.1), BalancedDPO(beta=0.1)], ids=repr)
def test_dpo_bf16(device: torch.device, tmp_path: Path, objective: Any) -> None:
    pl.seed_everything(0)
    module = DPOModule(
        TinyPolicy(hidden_size=64, num_layers=2, family="llama"),
        objective,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
    )
    dm = MultiTaskDataModule(
        [PreferenceFormat(n_train=32, n_val=4), PreferenceArithmetic(n_train=32, n_val=4)],
        batch_size=6,
        steps_per_epoch=3,
    )
    probe = _Probe()
    trainer = _trainer(device, tmp_path, 3, precision="bf16-mixed",
                       callbacks=[TaskGradNormMonitor(every_n_steps=1), probe])  # fmt: skip
    trainer.fit(module, dm)
    assert probe.devices == {device.type} and trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert probe.measured and any(probe.measured)
    assert all(math.isfinite(v) for step in probe.measured for v in step)


@pytest.mark.parametrize("config", ["tiny_grpo.yaml", "tiny_dpo.yaml"])
def test_cli_fit_bf16(device: torch.device, tmp_path: Path, config: str) -> None:
    """``gradbal fit`` as users run it, on the device, in bf16."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    command = [
        sys.executable, "-m", "gradbal", "fit", "--config", str(ROOT / "configs" / "debug" / config),
        f"--trainer.accelerator={accelerator(device)}", "--trainer.precision=bf16-mixed",
        f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_module_moves_with_the_trainer(device: torch.device) -> None:
    """A module built on CPU trains on the device: no tensor left behind by configure_model."""
    module = _grpo()
    module.configure_model()
    module.to(device)
    assert {p.device.type for p in module.parameters()} == {device.type}
    assert isinstance(module.model, nn.Module)
