"""``gradbal fit --config configs/debug/tiny_grpo_fsdp2.yaml``: GRPO sharded with FSDP2 through
Lightning's ``ModelParallelStrategy`` on 2 CPU processes (gloo), with TaskGradNormMonitor and
TaskSamplingScheduler.

ModelParallelStrategy's launcher runs the command again for rank 1, so each fit is a subprocess
with a timeout (inside pytest it would start pytest again). One module-scoped set of runs: 4
steps uninterrupted, and 2 steps then a resume to 4 in another run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.integration._process_group_run import run_group

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "debug" / "tiny_grpo_fsdp2.yaml"
pytestmark = pytest.mark.distributed


def _fit(config: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(var, None)
    return run_group(
        [sys.executable, "-m", "gradbal", "fit", "--config", str(config),
         f"--trainer.default_root_dir={root}", "--trainer.max_steps=3",
         "--trainer.limit_val_batches=0", *extra],
        cwd=ROOT, env=env, timeout=240,
    )  # fmt: skip


def _config(tmp: Path, dump: Path, keep: Path, export: Path) -> Path:
    """The shipped config plus a dump of every rank's statistics, a kept step-2 checkpoint, and
    rewards with spread (a random tiny policy gets no exact answer: zero gradients)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["callbacks"] += [
        {
            "class_path": "tests.integration._sharded_dump.DumpStats",
            "init_args": {"dirpath": str(dump)},
        },
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(keep), "every_n_train_steps": 2, "save_top_k": -1},
        },
        {"class_path": "gradbal.callbacks.SavePretrained", "init_args": {"dirpath": str(export)}},
    ]
    for task in config["data"]["init_args"]["tasks"]:
        name = task["class_path"].rsplit(".", 1)[1]
        task["class_path"] = f"tests.integration._sharded_dump.Spread{name}"
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(dump: Path, rank: int) -> list[dict[str, Any]]:
    lines = (dump / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3 steps uninterrupted; and, the way a user resumes, the same command stopped at step 2
    and run again to step 3 in its own run directory (gradbal finds ``last.ckpt`` itself)."""
    tmp = tmp_path_factory.mktemp("sharded_fit")
    keep = tmp / "keep"
    full = _fit(_config(tmp, tmp / "full_dump", keep, tmp / "hf"), tmp / "full")
    assert full.returncode == 0, full.stderr[-4000:]
    assert len(sorted(keep.glob("*step=2*.ckpt"))) == 1, list(keep.iterdir())
    (tmp / "again").mkdir()
    config = _config(tmp / "again", tmp / "resumed_dump", tmp / "keep2", tmp / "hf2")
    first = _fit(config, tmp / "resumed", "--trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-4000:]
    again = _fit(config, tmp / "resumed")  # max_steps 3; no --ckpt_path
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Resuming" in again.stdout + again.stderr, again.stdout[-2000:]
    for rank in (0, 1):  # steps 1-2, then only step 3: the second run did not start over
        assert [row["step"] for row in _rows(tmp / "resumed_dump", rank)] == [1, 2, 3]
    return {
        "full": [_rows(tmp / "full_dump", r) for r in (0, 1)],
        "resumed": [
            [row for row in _rows(tmp / "resumed_dump", r) if row["step"] > 2] for r in (0, 1)
        ],
        "full_root": tmp / "full",
        "export": tmp / "hf",
    }


def test_fsdp2_fit_measures_on_every_step_and_checkpoints(runs: dict[str, Any]) -> None:
    rank0, _ = runs["full"]
    assert [r["step"] for r in rank0] == [1, 2, 3]
    for row in rank0:  # every step measured (every_n_steps: 1)
        assert row["stats_step"] == row["step"] - 1
        assert row["num_groups"] == [4, 4]  # 2 ranks x 2 prompts of each task
    for task in (0, 1):  # a gradient was measured
        assert any(row["unbiased_sq"][task] != 0 for row in rank0)
    assert list(runs["full_root"].glob("checkpoints/*/last.ckpt"))


def test_fsdp2_ranks_hold_identical_statistics_and_probabilities(runs: dict[str, Any]) -> None:
    rank0, rank1 = runs["full"]
    assert rank0 == rank1  # statistics, group counts and sampling probabilities, every step
    probs = [row["sampling_probs"] for row in rank0]
    assert probs[-1] != [0.5, 0.5]  # the scheduler did act on the statistics


def test_fsdp2_resume_equals_uninterrupted_run(runs: dict[str, Any]) -> None:
    """The weights, optimiser state (gathered into one file), sampler and callbacks restored
    from step 2 give the uninterrupted run's step 3 on both ranks."""
    for rank in (0, 1):
        resumed = runs["resumed"][rank]
        assert [r["step"] for r in resumed] == [3]
        assert resumed[0] == runs["full"][rank][2]


def test_save_pretrained_under_fsdp2_writes_the_full_trained_weights(runs: dict[str, Any]) -> None:
    """Every rank gathers, rank 0 writes: the export equals the final checkpoint's weights."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(runs["export"]).state_dict()
    (last,) = runs["full_root"].glob("checkpoints/*/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    policy = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    assert exported.keys() == policy.keys()
    for name, value in policy.items():
        assert torch.equal(exported[name], value), name
