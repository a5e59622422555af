"""DAPO dynamic sampling: groups whose rewards are all equal are dropped, the rollout is refilled
from the DataModule (bounded), the cost is logged per task, and resume stays exact."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import pytest
import torch

from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import DynamicSampling, GRPOModule
from gradbal.modules._sequences import completion_logprobs, join, tokenize_prompts
from gradbal.modules.dynamic_sampling import concat_sequences
from gradbal.tasks import Task
from tests._compare import same_state


def _constant(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [1.0 for _ in completions]  # every group all-equal: no learning signal


def _spread(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [float(len(c) % 2) for c in completions]


class _Source:
    def __init__(self, name: str, reward: Any) -> None:
        self.name, self.reward = name, reward

    def load(self) -> Task:
        rows = {
            "prompt": [f"{self.name} {i}=" for i in range(20)],
            "answer": ["" for _ in range(20)],
        }
        split = datasets.Dataset.from_dict(rows)
        return Task(name=self.name, train=split, validation=split, reward=self.reward)


class _Recording(GRPOModule):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollouts: list[Any] = []

    def make_rollout(self, batch: dict[str, Any], micro_batch: int = 0) -> Any:
        rollout = super().make_rollout(batch, micro_batch)
        self.rollouts.append(rollout)
        return rollout


def _fit(
    root: Path,
    steps: int,
    options: DynamicSampling | None,
    ckpt: str | None = None,
    every: int | None = None,
) -> _Recording:
    pl.seed_everything(0)
    module = _Recording(
        TinyPolicy(hidden_size=32, num_layers=1, seed=0),
        num_generations=4,
        max_new_tokens=6,
        dynamic_sampling=options,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
    )
    callbacks = []
    if every is not None:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)
        )
    trainer = pl.Trainer(
        max_steps=steps,
        logger=pl.loggers.CSVLogger(root),
        log_every_n_steps=1,
        enable_checkpointing=every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=root,
    )
    dm = MultiTaskDataModule(
        [_Source("flat", _constant), _Source("coin", _spread)],
        batch_size=4,
        steps_per_epoch=8,
        seed=1,
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return module


def test_flat_groups_are_dropped_and_the_rollout_is_refilled_with_the_cost_logged(
    tmp_path: Path,
) -> None:
    module = _fit(tmp_path, 2, DynamicSampling(max_rounds=4))
    flat = 0  # task 0's groups always have equal rewards
    for r in module.rollouts:
        counts = r.dynamic_sampling
        assert counts is not None
        kept_rows = r.task_ids.shape[0]
        groups = r.rewards.view(-1, 4)
        assert not bool((r.task_ids == flat).any()), "a flat group was kept"
        assert bool((groups.max(1).values > groups.min(1).values).all())
        assert kept_rows == 16 or counts.rounds == 4  # full, or the bound was hit
        assert int(counts.dropped.sum()) >= 1 and bool(
            counts.dropped[counts.task_ids == flat].all()
        )
        assert int(counts.extra.sum()) == counts.extra.shape[0] - 4  # groups past the batch's own
    metrics = (tmp_path / "lightning_logs").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0]
    for name in (
        "train/dynamic_sampling/dropped_groups/flat",
        "train/dynamic_sampling/extra_completions/coin",
        "train/dynamic_sampling/rounds",
    ):
        assert name in header


def test_without_dynamic_sampling_flat_groups_stay(tmp_path: Path) -> None:
    (rollout,) = _fit(tmp_path, 1, None).rollouts
    assert rollout.dynamic_sampling is None and rollout.task_ids.shape[0] == 16
    assert bool((rollout.task_ids == 0).any())  # this seed's batch has flat prompts: kept


def test_refilled_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    full = _fit(tmp_path / "full", 3, DynamicSampling(max_rounds=2))
    _fit(tmp_path / "ckpt", 2, DynamicSampling(max_rounds=2), every=2)
    path = next((tmp_path / "ckpt").glob("*step=2*.ckpt"))
    resumed = _fit(tmp_path / "resumed", 3, DynamicSampling(max_rounds=2), ckpt=str(path))
    last, again = full.rollouts[-1], resumed.rollouts[-1]
    assert torch.equal(last.seqs.input_ids, again.seqs.input_ids)
    assert torch.equal(last.rewards, again.rewards)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_draw_prompts_is_seeded_follows_the_mixture_and_leaves_the_stream_alone() -> None:
    dm = MultiTaskDataModule(
        [_Source("flat", _constant), _Source("coin", _spread)],
        batch_size=4,
        sampling_probs=[0.0, 1.0],
    )
    dm.setup("fit")
    before = dm.state_dict()
    a, b = dm.draw_prompts(6, seed=3), dm.draw_prompts(6, seed=3)
    assert a["prompt"] == b["prompt"] and a["task_id"].tolist() == [1] * 6
    assert dm.draw_prompts(6, seed=4)["prompt"] != a["prompt"]
    assert same_state(dm.state_dict(), before)  # the stream's state, generator included
    with pytest.raises(ValueError, match="n >= 1"):
        dm.draw_prompts(0, seed=0)


def test_concatenated_batches_of_different_widths_score_as_they_did_alone() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1, seed=2).build()
    model.eval()
    dev = torch.device("cpu")
    parts = []
    for prompts, width in ((["a=", "bb="], 3), (["a much longer prompt="], 5)):
        ids, mask = tokenize_prompts(tok, prompts, None, dev)
        gen = torch.randint(
            3, 200, (len(prompts), width), generator=torch.Generator().manual_seed(width)
        )
        parts.append(join(ids, mask, gen, torch.ones_like(gen, dtype=torch.bool)))
    joined = concat_sequences(parts, tok.pad_token_id)
    scores = completion_logprobs(model, joined)
    alone = [completion_logprobs(model, p) for p in parts]
    torch.testing.assert_close(scores[:2, :3], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[2:, :5], alone[1], atol=1e-5, rtol=1e-5)
    assert not bool(joined.completion_mask[:2, 3:].any())


def test_bad_options_say_what_to_pass() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        DynamicSampling(max_rounds=0)
    with pytest.raises(ValueError, match="min_keep_rate"):
        DynamicSampling(min_keep_rate=0.0)


def test_gradbal_fit_with_the_shipped_config_logs_the_dynamic_sampling_cost(tmp_path: Path) -> None:
    """The user's command on configs/debug/tiny_grpo_dynamic_sampling.yaml, in a subprocess."""
    root = Path(__file__).parents[2]
    cmd = [
        sys.executable, "-m", "gradbal", "fit",
        "--config", "configs/debug/tiny_grpo_dynamic_sampling.yaml",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    rounds = [
        float(r["train/dynamic_sampling/rounds"])
        for r in rows
        if r.get("train/dynamic_sampling/rounds")
    ]
    assert len(rounds) == 2 and all(0 <= x <= 2 for x in rounds)
    dropped = [k for k in rows[0] if k.startswith("train/dynamic_sampling/dropped_groups/")]
    assert dropped, "no per-task dropped-group counts were logged"
