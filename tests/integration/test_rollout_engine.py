"""GRPO samples through its rollout engine: synced once per optimizer step, log-prob gap ~0."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from torch import Tensor

from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.rollout import HFGenerate, RolloutBatch
from gradbal.tasks import Addition, Reverse

GAP = "train/engine_logprob_gap"


class SpyEngine(HFGenerate):
    """HFGenerate that records its syncs and generations, optionally shifting its log-probs."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift
        self.syncs: list[int] = []
        self.versions: list[int] = []
        self.closed = False

    def sync_weights(self, named_parameters: Iterable[tuple[str, Tensor]], version: int) -> None:
        self.syncs.append(version)
        super().sync_weights(named_parameters, version)

    def generate(self, *args: Any, **kwargs: Any) -> RolloutBatch:
        out = super().generate(*args, **kwargs)
        self.versions.append(out.weight_version)
        assert out.logprobs is not None
        return out._replace(logprobs=out.logprobs - self.shift)

    def close(self) -> None:
        self.closed = True


class Metrics(pl.Callback):
    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def fit(tmp_path: Path, engine: SpyEngine, num_iterations: int) -> list[dict[str, float]]:
    pl.seed_everything(0)
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        num_generations=4,
        max_new_tokens=6,
        num_iterations=num_iterations,
        generation_seed=3,
        rollout_engine=engine,
    )
    dm = MultiTaskDataModule(
        [Addition(n_train=32, n_val=4), Reverse(n_train=32, n_val=4)],
        batch_size=4,
        steps_per_epoch=8,
    )
    metrics = Metrics()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[metrics],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return metrics.values


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_hf_engine_log_probs_match_the_trainer_and_sync_once_per_step(
    tmp_path: Path, num_iterations: int
) -> None:
    engine = SpyEngine()
    values = fit(tmp_path, engine, num_iterations)
    generating_steps = [0, 1, 2] if num_iterations == 1 else [0, 2]
    assert engine.syncs == generating_steps  # lazily, once per optimizer step that generates
    assert engine.versions == [s for s in generating_steps for _ in range(2)]  # 2 micro-batches
    assert engine.closed
    gaps = [v for step in values for k, v in step.items() if k.startswith(GAP)]
    assert any(k == f"{GAP}/addition" for step in values for k in step)
    assert any(k == f"{GAP}/reverse" for step in values for k in step)
    assert gaps and max(gaps) < 1e-4, gaps


def test_the_gap_shows_an_engine_whose_log_probs_differ(tmp_path: Path) -> None:
    values = fit(tmp_path, SpyEngine(shift=0.25), num_iterations=1)
    gaps = [v for step in values for k, v in step.items() if k.startswith(GAP)]
    assert gaps and all(abs(g - 0.25) < 1e-4 for g in gaps), gaps
