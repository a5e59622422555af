"""GenerationBudget: a run stops once it has generated its budget of completions (dynamic
sampling's refills counted), at an optimiser-step boundary, and a resumed run stops where the
uninterrupted one did."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from gradbal.callbacks import GenerationBudget
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import DynamicSampling, GRPOModule
from gradbal.tasks import Addition, Reverse

ROOT = Path(__file__).parents[2]


class _Recording(GRPOModule):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated: list[int] = []  # per new rollout: groups generated x G

    def make_rollout(self, batch: dict[str, Any], micro_batch: int = 0) -> Any:
        rollout = super().make_rollout(batch, micro_batch)
        counts = rollout.dynamic_sampling
        groups = rollout.task_ids.numel() // 4 if counts is None else counts.task_ids.numel()
        self.generated.append(groups * 4)
        return rollout


def _fit(
    root: Path, budget: int, accumulate: int = 1, ckpt: str | None = None, every: int = 0
) -> tuple[_Recording, pl.Trainer, GenerationBudget]:
    pl.seed_everything(0)
    module = _Recording(
        TinyPolicy(hidden_size=32, num_layers=1, seed=0),
        num_generations=4,
        max_new_tokens=6,
        dynamic_sampling=DynamicSampling(max_rounds=2),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
    )
    callback = GenerationBudget(max_completions=budget)
    callbacks: list[pl.Callback] = [callback]
    if every:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)
        )
    trainer = pl.Trainer(
        max_steps=50,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=bool(every),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=root,
    )
    dm = MultiTaskDataModule(
        [Addition(n_train=64, n_val=8), Reverse(n_train=64, n_val=8)],
        batch_size=4,
        steps_per_epoch=50,
        seed=1,
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return module, trainer, callback


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_run_stops_at_the_first_step_boundary_past_the_budget(
    tmp_path: Path, accumulate: int
) -> None:
    module, trainer, callback = _fit(tmp_path, budget=100, accumulate=accumulate)
    per_step = [
        sum(module.generated[i : i + accumulate])
        for i in range(0, len(module.generated), accumulate)
    ]
    totals = torch.tensor(per_step).cumsum(0).tolist()
    assert callback.generated == totals[-1] == sum(module.generated)
    assert totals[-1] >= 100 and (len(totals) == 1 or totals[-2] < 100)
    assert trainer.global_step == len(totals) < 50
    assert len(module.generated) == trainer.global_step * accumulate  # no half-finished step
    assert max(module.generated) > 16, "no refill happened: the test does not cover the cost"


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(tmp_path: Path) -> None:
    _, full, full_cb = _fit(tmp_path / "full", budget=120)
    assert full.global_step > 2
    _fit(tmp_path / "ckpt", budget=120, every=2)
    path = next((tmp_path / "ckpt").glob("*step=2*.ckpt"))
    _, resumed, resumed_cb = _fit(tmp_path / "resumed", budget=120, ckpt=str(path))
    assert (resumed.global_step, resumed_cb.generated) == (full.global_step, full_cb.generated)


def test_bad_budget_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match="max_completions"):
        GenerationBudget(max_completions=0)


def test_gradbal_fit_stops_on_the_budget_and_a_rerun_trains_no_further(tmp_path: Path) -> None:
    """The user's command, in a subprocess: the shipped dynamic-sampling config plus a budget."""
    config = yaml.safe_load((ROOT / "configs/debug/tiny_grpo_dynamic_sampling.yaml").read_text())
    config["trainer"]["max_steps"] = 40
    config["trainer"]["default_root_dir"] = str(tmp_path / "run")
    config["trainer"]["limit_val_batches"] = 0
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(tmp_path / "logs")},
    }
    config["trainer"]["callbacks"].append(
        {"class_path": "gradbal.callbacks.GenerationBudget", "init_args": {"max_completions": 60}}
    )
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "gradbal", "fit", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run() -> list[dict[str, str]]:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        rows: list[dict[str, str]] = []
        for metrics in sorted((tmp_path / "logs").rglob("metrics.csv")):
            with metrics.open() as f:
                rows += [r for r in csv.DictReader(f) if r.get("train/completions_generated")]
        return rows

    first = run()
    counts = [float(r["train/completions_generated"]) for r in first]
    assert counts and counts[-1] >= 60 and all(c < 60 for c in counts[:-1])
    last_step = int(first[-1]["step"])
    assert last_step < 39, "the budget did not stop the run before max_steps"
    again = run()  # resumes from the final checkpoint: the budget is spent, nothing more trains
    assert int(again[-1]["step"]) == last_step
