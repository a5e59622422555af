"""Under 2-process CPU DDP (gloo, ddp_spawn) every rank holds the same pooled statistics, and
they pool the groups of both ranks (checked by hand from each rank's own rollouts)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest

from gradbal.callbacks import LearnabilityMonitor, TaskLossMonitor, TaskSamplingScheduler
from gradbal.callbacks._pooled_source import PooledSource
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import LearnabilityProportional
from tests.integration._rollout_toy import G, RolloutClassifier
from tests.integration._three_tasks import synthetic_tasks


class Dump(pl.Callback):
    """Writes, per rank, its rollouts and every source's state at the end."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rollouts: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        r = pl_module.last_rollout
        self.rollouts.append(
            {"step": r.step, "rewards": r.rewards.tolist(), "task_ids": r.task_ids.tolist()}
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        sources = [cb for cb in trainer.callbacks if isinstance(cb, PooledSource)]  # type: ignore[attr-defined]
        scheduler = next(cb for cb in trainer.callbacks if isinstance(cb, TaskSamplingScheduler))  # type: ignore[attr-defined]
        out = {
            "rollouts": self.rollouts,
            "sources": {type(s).__name__: s.state_dict() for s in sources},
            "schedule": scheduler.state_dict(),
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(out))


@pytest.mark.distributed
def test_ranks_hold_identical_statistics_pooled_over_both(tmp_path: Path) -> None:
    callbacks = [
        LearnabilityMonitor(window=2),
        TaskLossMonitor(window=2),
        TaskSamplingScheduler(LearnabilityProportional(), every=2, ema=0.0),
        Dump(tmp_path),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=4,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    dm = MultiTaskDataModule(synthetic_tasks(), batch_size=12, steps_per_epoch=4, seed=0)
    trainer.fit(RolloutClassifier(), dm)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["sources"] == rank1["sources"] and rank0["schedule"] == rank1["schedule"]
    assert rank0["rollouts"] != rank1["rollouts"]  # each rank drew its own prompts

    variances: dict[int, list[float]] = {}
    for rank in (rank0, rank1):
        for r in rank["rollouts"]:
            if r["step"] in (2, 3):
                for start in range(0, len(r["rewards"]), G):
                    task = r["task_ids"][start]
                    variances.setdefault(task, []).append(
                        statistics.pvariance(r["rewards"][start : start + G])
                    )
    m = rank0["sources"]["LearnabilityMonitor"]["measurement"]
    assert m["step"] == 4
    for task, units in variances.items():
        assert m["values"][task] == pytest.approx(statistics.fmean(units), rel=1e-9)
        se = statistics.stdev(units) / math.sqrt(len(units))
        assert m["stderr"][task] == pytest.approx(se, rel=1e-9)
