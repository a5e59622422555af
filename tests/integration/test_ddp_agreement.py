"""2-process CPU DDP (gloo, ``ddp_spawn``) agrees with one process on the same global batch.

``MultiTaskDataModule.batch_size`` is *per rank*: under DDP every rank draws the same global
batch of ``batch_size * world_size`` rows and keeps its slice. So 2 ranks x 12 rows and 1
process x 24 rows see the same 24 rows per step (checked). ``ThreeTaskClassifier`` divides
each row's loss by the LOCAL batch size (12 vs 24) and DDP averages the ranks' gradients, so the
update is the gradient of the global mean loss in both runs: parameters, accuracies and losses
must agree up to float32 rounding. Gradient statistics agree with what their estimator defines
on the global batch, which differs between DDP and one process by design (see
:func:`test_grad_stats_are_the_documented_estimator_on_the_global_batch`). Finally a 2-process
run resumed from a mid-epoch checkpoint equals the uninterrupted one, with identical decisions
on both ranks after every update (test_callbacks_ddp.py checks ranks agree in one run only),
with a rule's ``TaskLossReweighter`` or with ``FAMOReweighter`` (whose whole state, logits and
Adam moments included, must be equal on both ranks and be the weights the module used).

``strategy="ddp"`` re-executes ``sys.argv`` (here: pytest) for rank 1 and hangs, so these tests
use ``ddp_spawn``: results come back through per-rank files written by :class:`Recorder`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.testing import assert_close

from gradbal import task_loss_weights
from gradbal.callbacks import (
    FAMOReweighter,
    TaskGradNormMonitor,
    TaskLossMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.gradstats import half_split_segments
from gradbal.tasks import TaskSource
from gradbal.weighting import InverseGradNorm
from tests.integration._three_tasks import NAMES, ThreeTaskClassifier, synthetic_tasks

pytestmark = pytest.mark.distributed

GLOBAL_BATCH, STEPS_PER_EPOCH, STEPS = 24, 4, 5
K = len(NAMES)
MONITOR_SEED = 0

Row = dict[str, Any]


class Recorder(pl.Callback):
    """Saves, per rank and step: the parameters before the step, the rank's rows, the loss weights
    its loss used, the loss, the logged accuracies, per-task summed cross-entropy, the monitor's
    statistics, the sampling probabilities and loss weights, and a ``FAMOReweighter``'s state
    (``None`` without one); at the end the final parameters (``rank<r>.pt``)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rows: list[Row] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        used = task_loss_weights(pl_module)  # what this step's report_task_losses applies
        self.rows.append(
            {
                "step": trainer.global_step,
                "used_weights": None if used is None else used.tolist(),
                "params": [p.detach().clone() for p in pl_module.parameters()],
                "task_id": batch["task_id"].clone(),
                "x": torch.tensor([row["x"] for row in batch["columns"]]),
                "y": torch.tensor([row["y"] for row in batch["columns"]]),
            }
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        row = self.rows[-1]
        shares = pl_module.task_losses.losses.detach()  # [N] ce_i / N (times loss weight)
        monitor = next(cb for cb in trainer.callbacks if isinstance(cb, TaskGradNormMonitor))  # type: ignore[attr-defined]
        weights = task_loss_weights(pl_module)
        row |= {
            "loss": float(outputs["loss"]),
            "ce_sum": torch.zeros(K).index_add_(0, row["task_id"], shares * len(shares)),
            "count": torch.bincount(row["task_id"], minlength=K).double(),
            "accuracy": {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("train/accuracy/")
            },
            "stats": (
                {k: v.clone() for k, v in monitor.stats._asdict().items()}
                if monitor.stats is not None and monitor.stats_step == row["step"]
                else None
            ),
            "probs": trainer.datamodule.sampling_probs,  # type: ignore[attr-defined]
            "weights": None if weights is None else weights.tolist(),
            "famo": next(
                (cb.state_dict() for cb in trainer.callbacks if isinstance(cb, FAMOReweighter)),  # type: ignore[attr-defined]
                None,
            ),
        }

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        final = {
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "probs": trainer.datamodule.sampling_probs,  # type: ignore[attr-defined]
            "weights": task_loss_weights(pl_module),
        }
        torch.save(
            {"rows": self.rows, "final": final}, self.out_dir / f"rank{trainer.global_rank}.pt"
        )


def fit(
    out: Path,
    devices: int,
    callbacks: list[pl.Callback],
    max_steps: int = STEPS,
    ckpt: Path | None = None,
) -> list[dict[str, Any]]:
    """Train the classifier on ``devices`` CPU processes with one global batch of 24 rows."""
    out.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=max_steps,
        callbacks=[*callbacks, Recorder(out)],
        default_root_dir=out,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tasks: list[TaskSource] = list(synthetic_tasks())
    dm = MultiTaskDataModule(
        tasks,
        batch_size=GLOBAL_BATCH // devices,  # per rank
        steps_per_epoch=STEPS_PER_EPOCH,
        seed=0,
    )
    trainer.fit(ThreeTaskClassifier(), dm, ckpt_path=ckpt)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(devices)]


def _monitor() -> TaskGradNormMonitor:
    return TaskGradNormMonitor(params="all_linear", every_n_steps=1, seed=MONITOR_SEED)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return fit(tmp_path_factory.mktemp("ddp"), devices=2, callbacks=[_monitor()])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return fit(tmp_path_factory.mktemp("single"), devices=1, callbacks=[_monitor()])


def test_ranks_slice_one_global_batch(ddp: list[Row], single: list[Row]) -> None:
    """Rank 0's rows followed by rank 1's are the one process's 24 rows, at every step."""
    (one,) = single
    assert len(one["rows"]) == len(ddp[0]["rows"]) == len(ddp[1]["rows"]) == STEPS
    for step, row in enumerate(one["rows"]):
        ranks = [run["rows"][step] for run in ddp]
        assert [r["task_id"].numel() for r in ranks] == [GLOBAL_BATCH // 2] * 2
        for key in ("task_id", "x", "y"):
            assert torch.equal(torch.cat([r[key] for r in ranks]), row[key]), (step, key)


def test_parameters_and_metrics_match_one_process(ddp: list[Row], single: list[Row]) -> None:
    """Before every step and at the end, both ranks hold bit-identical parameters, equal to the
    one process's up to float32 rounding (DDP's mean of the ranks' gradients of ``sum ce / 12``
    is the gradient of ``sum ce / 24``). The logged accuracies (all-reduced counts) are equal on
    both ranks and to the one process's; the loss (rank mean) and each task's mean
    cross-entropy (sums and counts over ranks) match too."""
    (one,) = single
    for step, row in enumerate(one["rows"]):
        rank0, rank1 = (run["rows"][step] for run in ddp)
        for p0, p1, p in zip(rank0["params"], rank1["params"], row["params"], strict=True):
            assert torch.equal(p0, p1)
            assert_close(p0, p, rtol=1e-6, atol=1e-6)
        assert rank0["accuracy"] == rank1["accuracy"]
        assert rank0["accuracy"].keys() == row["accuracy"].keys() and row["accuracy"]
        for key, value in row["accuracy"].items():
            assert abs(rank0["accuracy"][key] - value) <= 1e-6, (step, key)
        assert abs((rank0["loss"] + rank1["loss"]) / 2 - row["loss"]) <= 1e-6 * row["loss"]
        per_task_ddp = (rank0["ce_sum"] + rank1["ce_sum"]) / (rank0["count"] + rank1["count"])
        assert_close(per_task_ddp, row["ce_sum"] / row["count"], rtol=1e-6, atol=1e-7)
    for p0, p1, p in zip(*(run["final"]["params"] for run in (*ddp, one)), strict=True):
        assert torch.equal(p0, p1)
        assert_close(p0, p, rtol=1e-6, atol=1e-6)


def _row_grads(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """``[N, P]`` float64 gradient of each row's loss share ``ce_i / N`` (all parameters, which
    is what ``params="all_linear"`` measures on this two-Linear model)."""
    net = ThreeTaskClassifier().net.double()
    with torch.no_grad():
        for p, value in zip(net.parameters(), params, strict=True):
            p.copy_(value)
    rows = []
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(net(x[i : i + 1].double()), y[i : i + 1]) / len(y)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def _pooled_half_estimator(slices: list[Row], step: int) -> dict[str, Tensor]:
    """The DDP estimator written out: each rank splits its own groups (rows) of each task into
    halves A/B with the monitor's generator (seeded by ``(seed, step, micro-batch)``, the same on
    every rank), and only within-rank pairs count:
    ``unbiased_sq = sum_r 2 <g_rA, g_rB> / sum_r 2 n_rA n_rB``,
    ``naive_sq = sum_r ||g_rA + g_rB||^2 / sum_r n_r^2``. One slice = the one-process estimator."""
    cross, pairs = torch.zeros(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
    total_sq, n_sq, n = (torch.zeros(K, dtype=torch.float64) for _ in range(3))
    seed = hash((MONITOR_SEED, step, 0)) & (2**63 - 1)
    for row in slices:
        grads = _row_grads(row["params"], row["x"], row["y"])  # [N, P]
        task_ids = row["task_id"]
        groups = torch.arange(len(task_ids))
        generator = torch.Generator().manual_seed(seed)
        segments = half_split_segments(task_ids, groups, K, generator=generator)  # [N]
        for k in range(K):
            g_a, g_b = (grads[segments == 2 * k + h].sum(0) for h in (0, 1))
            n_a, n_b = (float((segments == 2 * k + h).sum()) for h in (0, 1))
            cross[k] += 2 * g_a @ g_b
            pairs[k] += 2 * n_a * n_b
            total_sq[k] += (g_a + g_b) @ (g_a + g_b)
            n_sq[k] += (n_a + n_b) ** 2
            n[k] += n_a + n_b
    return {"unbiased_sq": cross / pairs, "naive_sq": total_sq / n_sq, "num_groups": n}


def test_grad_stats_are_the_documented_estimator_on_the_global_batch(
    ddp: list[Row], single: list[Row]
) -> None:
    """TaskGradNormMonitor's statistics, all-reduced over 2 ranks, equal the pooled-halves
    estimator computed in one process from the same global batch and parameters.

    They do NOT equal the one-process monitor's numbers, by design
    (``gradbal/gradstats/cross_product.py``): shares are rank-local, so under DDP each rank
    splits its own rows into halves and only within-rank pairs enter
    ``sum_r cross_r / sum_r pairs_r``, while one process splits all 24 rows at once. Both are
    unbiased for the same ``||G_k||^2``, but not equal on a given batch. And the unit differs:
    ``G_k`` is the gradient of a row's loss share ``ce_i / N_local``, so halving the local batch
    multiplies the statistics by 4 (the rules are scale-invariant: decisions do not change).
    What agrees exactly across the two runs: the number of groups per task. Each run is
    checked against its own estimator written out by hand (``_pooled_half_estimator``).
    """
    (one,) = single
    for step, row in enumerate(one["rows"]):
        rank0, rank1 = (run["rows"][step] for run in ddp)
        assert rank0["stats"] is not None and row["stats"] is not None
        for key, value in rank0["stats"].items():  # all-reduced: identical on both ranks
            assert torch.equal(value.nan_to_num(-1), rank1["stats"][key].nan_to_num(-1)), key
        for stats, slices in ((rank0["stats"], [rank0, rank1]), (row["stats"], [row])):
            expected = _pooled_half_estimator(slices, step)
            scale = float(expected["naive_sq"].abs().max())
            assert bool(stats["valid"].all())
            for key in ("unbiased_sq", "naive_sq"):
                assert_close(stats[key].double(), expected[key], rtol=1e-4, atol=1e-5 * scale)
            assert torch.equal(stats["num_groups"].double(), expected["num_groups"])
        assert torch.equal(rank0["stats"]["num_groups"], row["stats"]["num_groups"])


def _rule_reweighter() -> list[pl.Callback]:
    return [TaskLossReweighter(InverseGradNorm(power=0.5), every=3)]


def _famo() -> list[pl.Callback]:
    return [TaskLossMonitor(window=1), FAMOReweighter(lr=0.1)]


@pytest.mark.parametrize("reweighter", [_rule_reweighter, _famo], ids=["rule", "famo"])
def test_resumed_ddp_run_equals_uninterrupted(
    tmp_path: Path, reweighter: Callable[[], list[pl.Callback]]
) -> None:
    """2 processes: a run checkpointed at step 3 (mid-epoch, a batch already prefetched) and
    resumed to step 6 ends with the same parameters, sampling probabilities and loss weights
    as the uninterrupted run, and both take the same decisions after every step, identical on
    both ranks (the scheduler updates every 2 steps, the rule's reweighter every 3, FAMO every
    step from the task losses pooled over both ranks)."""

    def callbacks(ckpt_dir: Path) -> list[pl.Callback]:
        return [
            _monitor(),
            TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5),
            *reweighter(),
            ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1),
        ]

    full = fit(tmp_path / "full", 2, callbacks(tmp_path / "ckpt"), max_steps=6)
    (ckpt,) = (tmp_path / "ckpt").glob("*step=3.ckpt")
    resumed = fit(tmp_path / "resumed", 2, callbacks(tmp_path / "ckpt2"), max_steps=6, ckpt=ckpt)

    decisions = ("probs", "weights", "used_weights", "famo")
    for run in (full, resumed):
        for row0, row1 in zip(run[0]["rows"], run[1]["rows"], strict=True):
            assert all(row0[key] == row1[key] for key in decisions), row0["step"]
    tail = [{key: row[key] for key in ("step", *decisions)} for row in full[0]["rows"][3:]]
    assert tail == [{key: row[key] for key in ("step", *decisions)} for row in resumed[0]["rows"]]
    assert full[0]["rows"][-1]["probs"] != full[0]["rows"][0]["probs"]  # the scheduler acted
    assert full[0]["rows"][-1]["weights"] is not None  # so did the reweighter
    for rank in (0, 1):
        a, b = full[rank]["final"], resumed[rank]["final"]
        assert a["probs"] == b["probs"]
        assert torch.equal(a["weights"], b["weights"])
        for p, q in zip(a["params"], b["params"], strict=True):
            assert torch.equal(p, q)
    if reweighter is _famo:
        _check_famo(full[0]["rows"])


def _check_famo(rows: list[Row]) -> None:
    """FAMO moved the weights, and each step's loss used the weights its previous step set."""
    famo = [row["famo"] for row in rows]
    for state, row in zip(famo, rows, strict=True):
        assert state["ingested_step"] == row["step"] + 1, (state, row["step"])
    assert famo[-1]["num_updates"] == len(rows) - 1  # one Adam step per step after the first
    assert max(abs(w - 1) for w in famo[-1]["weights"]) > 1e-3, famo[-1]["weights"]
    for before, row in zip(famo[:-1], rows[1:], strict=True):
        used = torch.tensor(before["weights"], dtype=torch.float32)
        assert torch.equal(torch.tensor(row["used_weights"]), used), (row["step"], used)
        assert row["weights"] is not None
    assert torch.equal(torch.tensor(rows[-1]["weights"]), torch.tensor(famo[-1]["weights"]).float())
