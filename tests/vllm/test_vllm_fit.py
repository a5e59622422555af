"""VLLMEngine's contract, and GRPO with it in a Lightning fit: one sync per optimizer step,
gap ~0, resume, TIS by hand. Each test starts (and closes) its own engine.

Needs vLLM (``make test-vllm``); skipped in the main environment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from gradbal.datamodules import MultiTaskDataModule
from gradbal.modules import GRPOModule
from gradbal.objectives import TruncatedImportanceSampling, tis_weights
from gradbal.rollout import SamplingSettings, VLLMEngine
from gradbal.tasks import Addition, Reverse
from tests.vllm._vllm import KV_BYTES, prompts, require_vllm, tiny_policy, trainer_logprobs

pytestmark = require_vllm()

G = 4


def test_the_batch_meets_the_engine_contract_with_stop_and_length_rows() -> None:
    """tests/unit/rollout/test_engine_contract.py's checks; eos is kept in the row (``stop``),
    then padding with log-prob 0. The random model rarely writes eos, so the engine is attached
    again with a tokenizer whose eos is the token it writes most: both reasons then occur. A
    second engine in the same process is refused (V06)."""
    import copy

    from tests.unit.rollout.test_engine_contract import check_contract

    model, tokenizer = tiny_policy().build()
    engine = VLLMEngine(kv_cache_memory_bytes=KV_BYTES)
    engine.attach(model, tokenizer)
    try:
        ids, mask = prompts(tokenizer)
        sampling = SamplingSettings(max_new_tokens=24)
        first = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=0)
        with pytest.raises(RuntimeError, match="V06: another VLLMEngine is running"):
            VLLMEngine(kv_cache_memory_bytes=KV_BYTES).attach(model, tokenizer)
        check_contract(first, len(ids) * G, 24, tokenizer.eos_token_id)  # type: ignore[attr-defined]
        frequent = int(torch.mode(first.completion_ids.flatten()).values)
        tok = copy.deepcopy(tokenizer)
        tok.eos_token = tok.convert_ids_to_tokens(frequent)  # type: ignore[attr-defined]
        engine.attach(model, tok)  # type: ignore[arg-type]  # restarts vLLM with that tokenizer
        out = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=0)
    finally:
        engine.close()
    check_contract(out, len(ids) * G, 24, frequent)
    assert {"stop", "length"} <= set(out.finish_reasons), out.finish_reasons
    assert out.logprobs is not None
    for row, lps, reason in zip(out.completion_ids, out.logprobs, out.finish_reasons, strict=True):
        if reason == "stop":
            end = int((row == frequent).nonzero()[0]) + 1
            assert torch.all(row[end:] == tok.pad_token_id)  # type: ignore[attr-defined]
            assert torch.all(lps[end:] == 0.0) and torch.all(lps[:end] < 0.0)


class SpyVLLM(VLLMEngine):
    def __init__(self) -> None:
        super().__init__(kv_cache_memory_bytes=KV_BYTES)
        self.syncs: list[int] = []

    def sync_weights(self, named_parameters: Iterable[tuple[str, Tensor]], version: int) -> None:
        self.syncs.append(version)
        super().sync_weights(named_parameters, version)


class Metrics(pl.Callback):
    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_fit_with_accumulation_syncs_once_per_optimizer_step(tmp_path: Path) -> None:
    pl.seed_everything(0)
    engine = SpyVLLM()
    module = GRPOModule(
        tiny_policy(),
        num_generations=4,
        max_new_tokens=6,
        generation_seed=3,
        rollout_engine=engine,
    )
    assert module.importance_sampling == TruncatedImportanceSampling()  # auto: on for vLLM
    dm = MultiTaskDataModule(
        [Addition(n_train=32, n_val=4), Reverse(n_train=32, n_val=4)],
        batch_size=2,
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
    assert engine.syncs == [0, 1, 2]  # 6 micro-batches, one sync per optimizer step
    gaps = [v for s in metrics.values for k, v in s.items() if k == "train/engine_logprob_gap"]
    assert len(gaps) == 6 and max(gaps) < 1e-4, gaps  # synced: vLLM samples the trainer's policy
    capped = [v for s in metrics.values for k, v in s.items() if k == "train/tis_capped_frac"]
    assert capped and max(capped) == 0.0
    assert engine._llm is None  # teardown closed it


def _fit(root: Path, steps: int, ckpt_every: int | None = None, ckpt: Path | None = None) -> Any:
    from lightning.pytorch.callbacks import ModelCheckpoint

    pl.seed_everything(0)
    module = GRPOModule(
        tiny_policy(),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        num_generations=4,
        max_new_tokens=6,
        generation_seed=3,
        rollout_engine=VLLMEngine(kv_cache_memory_bytes=KV_BYTES),
    )
    callbacks: list[pl.Callback] = []
    if ckpt_every is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=root, every_n_train_steps=ckpt_every, save_top_k=-1)
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=ckpt_every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
    )
    dm = MultiTaskDataModule([Addition(n_train=32, n_val=4)], batch_size=2, steps_per_epoch=8)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module


def test_resume_is_bit_for_bit_on_the_cpu_build(tmp_path: Path) -> None:
    """3 steps in one go == 2 steps, checkpoint, resume (a new vLLM, cold prefix cache) to 3,
    on this CPU build in fp32 (docs/rollout.md says what is not guaranteed elsewhere)."""
    full = _fit(tmp_path / "full", 3)
    _fit(tmp_path / "ckpt", 2, ckpt_every=2)
    resumed = _fit(tmp_path / "resumed", 3, ckpt=next((tmp_path / "ckpt").glob("*step=2*.ckpt")))
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_tis_weights_of_a_real_vllm_rollout_match_a_hand_computation() -> None:
    """Trainer weights moved after the sync: the gap is real. Hand: per completion, the sum of
    (trainer - engine) over its tokens up to eos, exp, 0 above 3 (sequence_mask)."""
    model, tokenizer = tiny_policy().build()
    engine = VLLMEngine(kv_cache_memory_bytes=KV_BYTES)
    engine.attach(model, tokenizer)
    try:
        ids, mask = prompts(tokenizer)
        out = engine.generate(
            ids, mask, num_completions=3, sampling=SamplingSettings(max_new_tokens=6), seed=0
        )
    finally:
        engine.close()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    trainer, cmask = trainer_logprobs(model, tokenizer, ids, mask, out.completion_ids, 3)
    assert out.logprobs is not None
    got = tis_weights(trainer, out.logprobs, cmask, mode="sequence_mask", cap=3.0)
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    for i, row in enumerate(out.completion_ids.tolist()):
        end = row.index(eos) + 1 if eos in row else len(row)
        total = sum(float(trainer[i, t]) - float(out.logprobs[i, t]) for t in range(end))
        ratio = math.exp(total)
        weight = ratio if ratio <= 3.0 else 0.0
        assert math.isclose(float(got.weights[i, 0]), weight, rel_tol=1e-5), (i, ratio)
        assert bool(got.capped[i, 0]) == (ratio > 3.0)
    assert float(got.ratio[cmask].sub(1).abs().max()) > 1e-3  # the weights are not all 1
