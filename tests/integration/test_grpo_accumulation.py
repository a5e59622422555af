"""GRPO under gradient accumulation (K) x data-parallel ranks (W) x num_iterations (I) is TRL's math.

* Rollout schedule: micro-batch ``k`` of optimiser step ``s`` trains on the rollout generated at
  position ``k`` of its cycle's first step ``s - s % I`` (TRL: ``steps_per_generation = K``).
* DAPO (the default aggregation): the first update's gradient is exactly
  ``sum_tokens grad(l_t) / N`` over all ``K * W`` micro-batches' tokens (checked against a
  hand computation from the same rollouts), the logged ``train/loss`` is ``sum l / N``, and
  after 2 steps the parameters equal one process trained on the same global batch.
* ``scale_rewards="batch"`` divides by the std of both ranks' rewards; the DAPO normaliser is
  right when the global batch has fewer active tokens than ranks.

The 2-rank cases run in ONE pair of spawned gloo processes (several fits each), started with a
timeout; the 1-process cases run here. Rollouts are deterministic (``_grpo_probe.fixed_parts``),
so every run trains on the same sequences.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.modules._sequences import completion_logprobs
from gradbal.modules.grpo import Rollout
from tests.integration._grpo_probe import LengthTask, ProbeGRPO, RowData, fixed_parts, rows_for, run

B, STEPS, LR = 2, 2, 0.5
MATRIX = [(k, i) for k in (1, 2) for i in (1, 2)]  # (accumulate K, num_iterations I)
SPAWN_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(module: ProbeGRPO, record: Any) -> dict[str, Any]:
    return {
        "trained": module.trained,
        "rollouts": module.rollouts,
        "params": record.params,
        "losses": record.losses,
    }


def _two_rank_worker(rank: int, out_dir: str, port: int) -> None:
    """Runs every 2-rank case in this process (rank ``rank`` of 2), one file per case."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    out = Path(out_dir)
    for k, i in MATRIX:
        module, record = run(
            ProbeGRPO(num_iterations=i), batch_size=B, accumulate=k, steps=STEPS, devices=2, lr=LR
        )
        torch.save(_summary(module, record), out / f"k{k}_i{i}_rank{rank}.pt")
    module, record = run(
        ProbeGRPO(one_token=True, mask_truncated_completions=True),
        batch_size=B,
        accumulate=1,
        steps=1,
        devices=2,
        lr=LR,
    )
    torch.save(_summary(module, record), out / f"one_token_rank{rank}.pt")
    module, record = run(
        ProbeGRPO(fixed=False, scale_rewards="batch", num_generations=4),
        batch_size=3,
        accumulate=1,
        steps=1,
        devices=2,
        lr=LR,
    )
    torch.save(_summary(module, record), out / f"batch_std_rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Start the two ranks once for the whole file; fail (not hang) past the timeout."""
    out = tmp_path_factory.mktemp("two_ranks")
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_two_rank_worker, args=(r, str(out), port)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(SPAWN_TIMEOUT_S)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join()
    assert not alive, f"2-rank GRPO runs did not finish within {SPAWN_TIMEOUT_S} s"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out


def _load(out: Path, name: str) -> list[dict[str, Any]]:
    return [torch.load(out / f"{name}_rank{r}.pt", weights_only=False) for r in range(2)]


def _one_process(k: int, i: int, batch_size: int = B, **kwargs: Any) -> dict[str, Any]:
    module, record = run(
        ProbeGRPO(num_iterations=i, **kwargs),
        batch_size=batch_size,
        accumulate=k,
        steps=STEPS,
        lr=LR,
    )
    return _summary(module, record)


def _runs(k: int, i: int, world_size: int, two_ranks: Path | None) -> list[dict[str, Any]]:
    if world_size == 1:
        return [_one_process(k, i)]
    assert two_ranks is not None
    return _load(two_ranks, f"k{k}_i{i}")


# ---- the documented formulas, computed by hand from the same rollouts -----------------------


def expected_schedule(rank: int, world_size: int, k: int, i: int) -> list[dict[str, Any]]:
    """TRL's cycle: micro-batch m (step s = m // K, position m % K) trains on the rollout of
    micro-batch (s - s % I) * K + m % K."""
    out = []
    for m in range(STEPS * k):
        s = m // k
        source = (s - s % i) * k + m % k
        out.append({"step": s, "rows": rows_for(source, rank, world_size, B)})
    return out


def dapo_first_update(
    world_size: int, k: int, one_token: bool = False
) -> tuple[list[Tensor], float]:
    """``-LR * grad(sum_t l_t / N)`` over all K * W micro-batches of step 0 and the loss value.

    On the first step the policy is the sampling policy (ratio 1), so ``l_t = -A_i * ratio``
    and ``grad l_t = -A_i grad log pi(t)``: every token weighs ``1 / N``.
    """
    model, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    pieces = []
    for m in range(k):
        for r in range(world_size):
            one = (0 if r == 0 else -1) if one_token else None
            seqs, truncated, _, adv = fixed_parts(rows_for(m, r, world_size, B), tokenizer, one)
            mask = (
                seqs.completion_mask & ~truncated.unsqueeze(1)
                if one_token
                else seqs.completion_mask
            )
            pieces.append((seqs, adv, mask))
    n = sum(float(mask.sum()) for _, _, mask in pieces)
    total = torch.zeros(())
    for seqs, adv, mask in pieces:
        lp = completion_logprobs(model, seqs, 1.0)  # [N, C]
        per_token = -adv.unsqueeze(1) * torch.exp(lp - lp.detach())  # [N, C]
        total = total + (per_token * mask).sum() / n
    model.zero_grad()
    total.backward()
    return [
        -LR * p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ], float(total)


def _update(run_: dict[str, Any], step: int = 0) -> list[Tensor]:
    return [b - a for a, b in zip(run_["params"][step], run_["params"][step + 1], strict=True)]


def _rel_err(a: list[Tensor], b: list[Tensor]) -> float:
    num = sum(float((x - y).double().pow(2).sum()) for x, y in zip(a, b, strict=True))
    den = sum(float(y.double().pow(2).sum()) for y in b)
    return (num / den) ** 0.5


# ---- the matrix ----------------------------------------------------------------------------


@pytest.mark.distributed
@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize(("k", "i"), MATRIX)
def test_accumulation_ranks_iterations_matrix(
    world_size: int, k: int, i: int, request: pytest.FixtureRequest
) -> None:
    two_ranks = request.getfixturevalue("two_ranks") if world_size == 2 else None
    runs = _runs(k, i, world_size, two_ranks)
    # 1. Rollout schedule (item 1): which rollout every micro-batch trained on.
    for rank, run_ in enumerate(runs):
        assert run_["trained"] == expected_schedule(rank, world_size, k, i)
    # Ranks hold the same parameters throughout.
    for a, b in zip(runs[0]["params"][-1], runs[-1]["params"][-1], strict=True):
        assert torch.equal(a, b)
    # 2. First update = the documented per-token weights 1 / N over the whole global batch.
    expected, loss = dapo_first_update(world_size, k)
    assert _rel_err(_update(runs[0]), expected) < 1e-5
    assert runs[0]["losses"][0] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    # 3. Same parameters after STEPS steps as one process over the same global batch.
    reference = _one_process(1, i, batch_size=B * world_size * k)
    for step in range(STEPS):
        assert _rel_err(_update(runs[0], step), _update(reference, step)) < 1e-5, step


@pytest.mark.distributed
def test_dapo_normaliser_with_fewer_global_tokens_than_ranks(two_ranks: Path) -> None:
    """One active token on 2 ranks: its weight is 1 (not 0.5, a per-rank mean clamped at 1)."""
    runs = _load(two_ranks, "one_token")
    expected, _ = dapo_first_update(2, 1, one_token=True)
    assert _rel_err(_update(runs[0]), expected) < 1e-5


@pytest.mark.distributed
def test_batch_scaled_advantages_use_the_std_of_all_ranks(two_ranks: Path) -> None:
    runs = _load(two_ranks, "batch_std")
    rewards = [run_["rollouts"][0]["rewards"] for run_ in runs]
    std = torch.cat(rewards).std()
    assert std > 0
    for r, run_ in enumerate(runs):
        grouped = rewards[r].view(-1, 4)
        centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
        torch.testing.assert_close(run_["rollouts"][0]["advantages"], centred / (std + 1e-4))
    # the per-rank std differs from the global one here (else the test could not fail)
    assert any(abs(float(r.std() - std)) > 1e-3 for r in rewards)


# ---- logged metrics (item 4) ---------------------------------------------------------------


class MetricProbe(ProbeGRPO):
    """Keeps the token masks and flags each step's metrics were computed from."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric_inputs: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def _log_step(self, *args: Any) -> None:
        r, clipped, kl, mask = args[-4:]
        self.metric_inputs.append((r.task_ids, clipped.detach(), kl.detach(), mask))
        super()._log_step(*args)


class Metrics(pl.Callback):
    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_clip_frac_and_kl_are_token_weighted_means() -> None:
    """``train/clip_frac`` and ``train/kl`` (and per task) are sums over tokens / token counts,
    as TRL's ``clip_ratio`` and ``kl``, not means of per-completion fractions."""
    module = MetricProbe(num_iterations=2, beta=0.1, epsilon_low=0.002, epsilon_high=0.002)
    metrics = Metrics()
    module.optimizer_factory = lambda params: torch.optim.SGD(params, lr=LR)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        callbacks=[metrics],
    )
    trainer.fit(module, RowData(batch_size=4, num_batches=2))
    task_ids, clipped, kl, mask = module.metric_inputs[1]  # step 1: ratios moved
    logged = metrics.values[1]
    tokens = mask.float()
    assert 0 < float((clipped & mask).sum()) < float(mask.sum())
    for name, per_token in (("clip_frac", clipped.float()), ("kl", kl)):
        token_mean = float((per_token * tokens).sum() / tokens.sum())
        sequence_mean = float(((per_token * tokens).sum(1) / tokens.sum(1)).mean())
        assert abs(token_mean - sequence_mean) > 1e-4  # the two definitions differ here
        assert logged[f"train/{name}"] == pytest.approx(token_mean, rel=1e-5)
        for t in (0, 1):
            rows = task_ids == t
            expected = float((per_token[rows] * tokens[rows]).sum() / tokens[rows].sum())
            assert logged[f"train/{name}/t{t}"] == pytest.approx(expected, rel=1e-5)


# ---- resume (generation seeded per micro-batch, window state not carried) ------------------


def _fit_real(
    root: Path, steps: int, ckpt_every: int | None = None, ckpt_path: Path | None = None
) -> ProbeGRPO:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gradbal.datamodules import MultiTaskDataModule

    pl.seed_everything(0, verbose=False)
    module = ProbeGRPO(fixed=False, num_iterations=2, num_generations=4)
    module.optimizer_factory = lambda params: torch.optim.SGD(params, lr=LR)
    callbacks: list[pl.Callback] = []
    if ckpt_every is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=root, every_n_train_steps=ckpt_every, save_top_k=-1)
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=ckpt_every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
    )
    dm = MultiTaskDataModule(
        [LengthTask("a"), LengthTask("b")], batch_size=2, steps_per_epoch=8, seed=1
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module


def test_accumulated_cycles_resume_bit_for_bit_at_a_cycle_boundary(tmp_path: Path) -> None:
    """K=2, I=2 with real sampling: stopped after step 2 (a cycle boundary, mid-epoch) and
    resumed to step 4, the run equals the uninterrupted one bit for bit."""
    full = _fit_real(tmp_path / "full", 4)
    _fit_real(tmp_path / "ckpt", 2, ckpt_every=2)
    path = next((tmp_path / "ckpt").glob("*step=2*.ckpt"))
    resumed = _fit_real(tmp_path / "resumed", 4, ckpt_path=path)
    assert any(float(r["advantages"].abs().sum()) > 0 for r in full.rollouts)  # it learned
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # the resumed run generated exactly the second cycle's rollouts of the full run
    for a, b in zip(full.rollouts[2:], resumed.rollouts, strict=True):
        assert a["rows"] == b["rows"] and torch.equal(a["rewards"], b["rewards"])


def test_per_rollout_logging_counts_each_rollout_once_under_accumulation_and_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K=2, I=2: the engine-gap log (and the identical-groups watch, dynamic-sampling counts)
    runs once per rollout made, not again when micro-batch 0 reuses rollout 0 after rollout 1."""
    logged: list[int] = []
    original = GRPOModule._log_engine_gap

    def spy(self: GRPOModule, r: Rollout, *args: Any) -> None:
        logged.append(self.global_step)
        original(self, r, *args)

    monkeypatch.setattr(GRPOModule, "_log_engine_gap", spy)
    module = _fit_real(tmp_path, 4)
    assert len(module.rollouts) == 4  # steps 0 and 2 make K=2 rollouts each
    assert logged == [0, 0, 2, 2]
