"""A few real optimiser steps of GRPO and SFT on a tiny model, and an exact data-stream resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradbal.callbacks import SavePretrained
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import PretrainedPolicy, TinyPolicy
from gradbal.modules import GRPOModule, SFTModule
from gradbal.objectives import GRPOAggregation
from gradbal.tasks import Addition, Countdown, Reverse


def tasks() -> list[Any]:
    return [
        Addition(n_train=32, n_val=4),
        Reverse(n_train=32, n_val=4),
        Countdown(n_train=32, n_val=4),
    ]


def trainer(tmp_path: Path, max_steps: int, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def scalars(log_dir: str) -> dict[str, list[float]]:
    ea = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_grpo_fit_logs_per_task_curves_and_updates_weights(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        loss_aggregation=GRPOAggregation(),
        num_generations=4,
        max_new_tokens=6,
        beta=0.1,
    )
    dm = MultiTaskDataModule(
        tasks(), batch_size=6, steps_per_epoch=3, sampling_probs=[0.5, 0.25, 0.25]
    )
    t = trainer(tmp_path, 3, limit_val_batches=2)
    module.configure_model()
    before = [p.detach().clone() for p in module.model.parameters()]  # type: ignore[union-attr]
    t.fit(module, dm)
    after = list(module.model.parameters())  # type: ignore[union-attr]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert module.task_losses is not None
    reported = module.task_losses
    assert reported.losses.shape == reported.task_ids.shape == reported.group_ids.shape == (24,)
    assert reported.step == t.fit_loop.total_batch_idx and reported.parts is None
    logged = scalars(t.logger.log_dir)  # type: ignore[union-attr]
    # No scheduler, so no train/sampling_prob/<task> curve (TaskSamplingScheduler is its one
    # emitter): the fixed mixture is recorded once, as the DataModule's hyperparameter.
    assert not any(k.startswith("train/sampling_prob/") for k in logged)
    hparams = yaml.safe_load((Path(t.logger.log_dir) / "hparams.yaml").read_text())  # type: ignore[union-attr, arg-type]
    assert hparams["sampling_probs"] == {"addition": 0.5, "reverse": 0.25, "countdown": 0.25}
    assert any(k.startswith("train/reward/") for k in logged)
    assert {"train/loss", "train/reward", "train/kl", "train/clip_frac", "val/accuracy"} <= set(
        logged
    )


def test_sft_fit_then_grpo_from_its_export(tmp_path: Path) -> None:
    pl.seed_everything(0)
    sft = SFTModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        val_max_new_tokens=6,
    )
    export = tmp_path / "hf"
    dm = MultiTaskDataModule(tasks(), batch_size=8, steps_per_epoch=4)
    t = trainer(tmp_path / "sft", 4, limit_val_batches=1, callbacks=[SavePretrained(str(export))])
    t.fit(sft, dm)
    first, last = (scalars(t.logger.log_dir)["train/loss"][i] for i in (0, -1))  # type: ignore[union-attr]
    assert last < first  # it learns something in 4 steps at lr 1e-2
    assert (export / "config.json").exists() and (export / "tokenizer.json").exists()

    grpo = GRPOModule(PretrainedPolicy(str(export)), num_generations=2, max_new_tokens=4)
    t2 = trainer(tmp_path / "grpo", 1, limit_val_batches=0)
    t2.fit(grpo, MultiTaskDataModule(tasks(), batch_size=2, steps_per_epoch=1))
    assert t2.global_step == 1


class _Recorder(pl.LightningModule):
    """Trains a scalar and records which prompts each step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen.append(list(batch["prompt"]))
        return (self.w - 1) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_resumed_run_trains_on_exactly_the_same_prompts(tmp_path: Path) -> None:
    """Uninterrupted 7 steps vs 4 steps + resume to 7, with probabilities changed mid-run."""

    def dm() -> MultiTaskDataModule:
        return MultiTaskDataModule(tasks(), batch_size=3, steps_per_epoch=5, seed=11)

    full = _Recorder()
    data = dm()
    data.setup("fit")
    data.set_sampling_probs([0.7, 0.2, 0.1])
    trainer(tmp_path / "full", 7, limit_val_batches=0).fit(full, data)

    part = _Recorder()
    data = dm()
    data.setup("fit")
    data.set_sampling_probs([0.7, 0.2, 0.1])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    trainer(tmp_path / "part", 4, limit_val_batches=0, callbacks=[ckpt]).fit(part, data)
    resumed = _Recorder()
    path = next((tmp_path / "ckpt").glob("*step=4*.ckpt"))
    trainer(tmp_path / "resumed", 7, limit_val_batches=0).fit(resumed, dm(), ckpt_path=path)

    assert part.seen + resumed.seen == full.seen
    assert torch.equal(resumed.w, full.w)


def test_grpo_variants_run(tmp_path: Path) -> None:
    """Rollout reuse (num_iterations=2), truncation masking, clip-higher, KL through the
    adapter-disabled LoRA base, and the Dr. GRPO / BNPO aggregations all train."""
    from gradbal.models import LoRA
    from gradbal.objectives import BNPOAggregation, DrGRPOAggregation

    variants: list[dict[str, Any]] = [
        {"num_iterations": 2, "mask_truncated_completions": True, "epsilon_high": 0.28},
        {"loss_aggregation": DrGRPOAggregation(), "scale_rewards": "none"},
        {"loss_aggregation": BNPOAggregation(), "scale_rewards": "batch", "beta": 0.05},
    ]
    for i, kwargs in enumerate(variants):
        pl.seed_everything(i)
        lora = LoRA(r=2) if "beta" in kwargs else None
        module = GRPOModule(
            TinyPolicy(hidden_size=32, num_layers=1, lora=lora),
            num_generations=2,
            max_new_tokens=4,
            **kwargs,
        )
        t = trainer(tmp_path / str(i), 2, limit_val_batches=0)
        t.fit(module, MultiTaskDataModule(tasks(), batch_size=2, steps_per_epoch=2))
        assert t.global_step == 2
        assert module.ref_model is None  # never a second copy: LoRA's base is the reference
        assert torch.isfinite(module.task_losses.losses).all()  # type: ignore[union-attr]
