"""benchmarks/real_grad_spread.py: its pooled per-task estimate and jackknife s.e. equal the same
statistics formed from brute-force per-group gradients (one ``autograd.grad`` per group).

A tiny LoRA policy and two tasks whose reward has spread for a random policy stand in for
SmolLM2 and the chat tasks; the code path (Trainer.fit of GRPOModule, TaskGradCapture with
block segments, ``task_grad_stats``) is the benchmark's own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from gradbal.gradstats import TaskGradCapture, select_modules
from gradbal.models import LoRA, TinyPolicy
from gradbal.tasks import Task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_grad_spread.py"
_spec = importlib.util.spec_from_file_location("real_grad_spread", _PATH)
assert _spec is not None and _spec.loader is not None
spread = importlib.util.module_from_spec(_spec)
sys.modules["real_grad_spread"] = spread
_spec.loader.exec_module(spread)

BLOCKS, PROMPTS, G = 3, 6, 4


def _reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [(len(c) % 3) / 2 for c in completions]


def _task(name: str) -> Task:
    rows = {"prompt": [f"{name} q{i}=" for i in range(PROMPTS)], "answer": [""] * PROMPTS}
    split = datasets.Dataset.from_dict(rows)
    return Task(name=name, train=split, validation=split, reward=_reward)


class _PerGroup(pl.Callback):
    """Before each (lr 0) optimizer step, repeat the step's training_step (same seeded rollout)
    and take each group's gradient alone, per selection."""

    def __init__(self, selections: dict[str, str]) -> None:
        self.selections = selections
        self.groups: list[tuple[int, dict[str, Tensor]]] = []  # (task, {selection: flat grad})

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batch, self.batch_idx = batch, batch_idx

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        params = {}
        for name, selection in self.selections.items():
            modules = select_modules(pl_module.model, selection)
            params[name] = [p for _, m in modules for p in m.parameters(False) if p.requires_grad]
        with torch.enable_grad(), TaskGradCapture.paused():
            pl_module.training_step(self.batch, self.batch_idx)
            reported = pl_module.task_losses
            for gid in reported.group_ids.unique(sorted=True).tolist():
                rows = reported.group_ids == gid
                flat = {}
                for name, ps in params.items():
                    grads = torch.autograd.grad(reported.losses[rows].sum(), ps, retain_graph=True)
                    flat[name] = torch.cat([g.flatten() for g in grads]).double()
                self.groups.append((int(reported.task_ids[rows][0]), flat))


def _brute(groups: list[Tensor]) -> tuple[float, float]:
    """Cross-block estimate and jackknife s.e. from per-group gradients, dealt round-robin."""

    def estimate(skip: int | None) -> float:
        sums = [sum(g for j, g in enumerate(groups) if j % BLOCKS == b) for b in range(BLOCKS)]
        sizes = [sum(1 for j in range(len(groups)) if j % BLOCKS == b) for b in range(BLOCKS)]
        cross = pairs = 0.0
        for b in range(BLOCKS):
            for c in range(BLOCKS):
                if b != c and skip not in (b, c):
                    cross += float(sums[b] @ sums[c])  # type: ignore[operator]
                    pairs += sizes[b] * sizes[c]
        return cross / pairs

    deleted = torch.tensor([estimate(b) for b in range(BLOCKS)], dtype=torch.float64)
    se = ((BLOCKS - 1) / BLOCKS * (deleted - deleted.mean()).square().sum()).sqrt()
    return estimate(None), float(se)


def test_pooled_estimate_and_se_match_brute_force() -> None:
    selections = {"lora": "trainable", "last_attention_block": "last_attention_block"}
    brute = _PerGroup(selections)
    policy = TinyPolicy(hidden_size=32, num_layers=2, lora=LoRA(r=4, alpha=8))
    tasks = [_task("a"), _task("b")]
    results = spread.measure_spread(
        policy,
        tasks,
        prompts_per_task=PROMPTS,
        prompts_per_batch=2,  # 3 batches: blocks pool groups of different batches
        selections=list(selections),
        blocks=BLOCKS,
        num_generations=G,
        max_new_tokens=6,
        temperature=1.0,
        callbacks=[brute],
    )
    assert len(brute.groups) == 2 * PROMPTS
    for name in selections:
        rows = results[name]
        assert [r.task for r in rows] == ["a", "b"]
        for k, row in enumerate(rows):
            grads = [g[name] for t, g in brute.groups if t == k]
            estimate, se = _brute(grads)
            assert row.groups == PROMPTS
            assert row.active_groups == sum(bool(g.abs().sum() > 0) for g in grads)
            assert abs(estimate) > 0 and se > 0
            assert_close(row.unbiased_sq, estimate, rtol=1e-4, atol=0.0)
            assert_close(row.se, se, rtol=1e-4, atol=0.0)


def test_too_few_blocks_is_an_error() -> None:
    with pytest.raises(ValueError, match="blocks must be >= 3"):
        spread.measure_spread(TinyPolicy(), [_task("a")], prompts_per_task=4, blocks=2)


def test_table_ratio_over_resolved_tasks_only() -> None:
    rows = [
        spread.TaskSpread("a", 48, 30, 4.0, 1.0),
        spread.TaskSpread("b", 48, 30, 1.0, 0.2),
        spread.TaskSpread("c", 48, 30, 1.0, 0.6),  # within 2 s.e. of 0
    ]
    table, ratio, resolved = spread.spread_table(rows)
    assert resolved == ["a", "b"] and ratio == pytest.approx(4.0)
    assert "| c | 48 | 30 | 1.000e+00 | 6.000e-01 | not resolved: within 2 s.e. of 0 |" in table
