"""GRPO's truncated importance-sampling (TIS) correction, wired through the rollout engine.

With ``HFGenerate`` the engine's log-probs are the trainer's own, so ``auto`` applies nothing and
an explicit correction changes the training by no more than the fp32 noise of the gap. An engine
whose log-probs are shifted by ``s`` per token has token ratios ``exp(s)``: the gradient is then
scaled exactly as the hand computation says. The on-policy GRPO loss *value* is ~0 (advantages
sum to 0 in each group), so the tests compare the SGD update (``lr * gradient``) instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from datasets import Dataset
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.objectives import TruncatedImportanceSampling
from gradbal.rollout import HFGenerate, RolloutBatch
from gradbal.tasks import Task


def _digit_share(prompts: list[str], completions: list[str], **_: list[Any]) -> list[float]:
    """A reward that varies between random completions, so advantages (and the loss) are not 0."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


class Digits:
    name = "digits"

    def load(self) -> Task:
        rows = Dataset.from_dict(
            {"prompt": [f"add {i}+{i}=" for i in range(16)], "answer": ["0"] * 16}
        )
        return Task(self.name, train=rows, validation=rows.select(range(2)), reward=_digit_share)


class ShiftedEngine(HFGenerate):
    """HFGenerate whose log-probs are lower by ``shift``: token ratios exp(trainer - engine) =
    exp(shift). ``needs_importance_sampling`` as given."""

    def __init__(self, shift: float = 0.0, needs_importance_sampling: bool = False) -> None:
        super().__init__()
        self.shift = shift
        self.needs_importance_sampling = needs_importance_sampling

    def generate(self, *args: Any, **kwargs: Any) -> RolloutBatch:
        out = super().generate(*args, **kwargs)
        assert out.logprobs is not None
        return out._replace(logprobs=out.logprobs - self.shift)


class Metrics(pl.Callback):
    """The logged metrics of each step, and the parameter update of the whole fit."""

    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []
        self.start: Tensor | None = None
        self.update: Tensor | None = None
        self.module: pl.LightningModule | None = None

    @staticmethod
    def _flat(module: pl.LightningModule) -> Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = self._flat(module)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        assert self.start is not None
        self.update = self._flat(module) - self.start


def fit(
    tmp_path: Path,
    max_steps: int = 2,
    ckpt_every: int | None = None,
    ckpt_path: Path | None = None,
    **module_kwargs: Any,
) -> Metrics:
    pl.seed_everything(0)
    module = GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        num_generations=4,
        max_new_tokens=6,
        generation_seed=3,
        **module_kwargs,
    )
    dm = MultiTaskDataModule([Digits()], batch_size=4, steps_per_epoch=8)
    metrics = Metrics()
    callbacks: list[pl.Callback] = [metrics]
    if ckpt_every is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=ckpt_every, save_top_k=-1)
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=ckpt_every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    metrics.module = module
    return metrics


def update(metrics: Metrics) -> Tensor:
    assert metrics.update is not None
    return metrics.update


def test_auto_is_off_for_hf_generate_and_on_for_an_engine_that_needs_it() -> None:
    policy = TinyPolicy(hidden_size=32, num_layers=1)
    assert GRPOModule(policy).importance_sampling is None
    assert GRPOModule(policy, importance_sampling="off").importance_sampling is None
    tis = GRPOModule(
        policy, rollout_engine=ShiftedEngine(needs_importance_sampling=True)
    ).importance_sampling
    assert tis == TruncatedImportanceSampling(mode="sequence_mask", cap=3.0)
    off = GRPOModule(
        policy,
        rollout_engine=ShiftedEngine(needs_importance_sampling=True),
        importance_sampling="off",
    )
    assert off.importance_sampling is None


def test_with_hf_generate_the_correction_leaves_the_training_unchanged(tmp_path: Path) -> None:
    plain = fit(tmp_path)
    corrected = fit(tmp_path, importance_sampling=TruncatedImportanceSampling())
    assert update(plain).abs().max() > 1e-3  # the comparison is not a vacuous 0 == 0
    torch.testing.assert_close(update(corrected), update(plain), rtol=1e-4, atol=1e-6)
    first = corrected.values[0]
    assert first["train/tis_capped_frac/digits"] == 0.0
    assert abs(first["train/tis_weight/digits"] - 1.0) < 1e-5
    assert not any(k.startswith("train/tis_") for step in plain.values for k in step)


def test_a_shifted_engine_scales_the_first_update_by_hand(tmp_path: Path) -> None:
    """Shift 0.25: every token ratio is e^0.25 = 1.284, and on the first step pi = pi_old, so
    the surrogate's gradient is -w A d log pi per token: linear in the weights w.

    token_truncate, cap 1.1: every weight is 1.1 -> update x 1.1, every token capped.
    token_mask, cap 1.5: every weight is 1.284 -> update x 1.284, none capped.
    """
    plain = update(fit(tmp_path, max_steps=1))
    engine = ShiftedEngine(shift=0.25)
    tis = TruncatedImportanceSampling(mode="token_truncate", cap=1.1)
    run = fit(tmp_path, max_steps=1, rollout_engine=engine, importance_sampling=tis)
    torch.testing.assert_close(update(run), 1.1 * plain, rtol=1e-4, atol=1e-6)
    assert run.values[0]["train/tis_capped_frac/digits"] == 1.0
    assert math.isclose(run.values[0]["train/tis_weight/digits"], 1.1, rel_tol=1e-5)
    assert math.isclose(run.values[0]["train/engine_logprob_gap/digits"], 0.25, rel_tol=1e-3)
    tis = TruncatedImportanceSampling(mode="token_mask", cap=1.5)
    run = fit(tmp_path, max_steps=1, rollout_engine=engine, importance_sampling=tis)
    torch.testing.assert_close(update(run), math.exp(0.25) * plain, rtol=1e-4, atol=1e-6)
    assert run.values[0]["train/tis_capped_frac/digits"] == 0.0


def test_sequence_mask_drops_completions_whose_product_exceeds_the_cap(tmp_path: Path) -> None:
    """Shift 2 per token, ``auto`` (TRL's sequence_mask, cap 3): a completion of n >= 1 tokens
    has the ratio e^(2 n) >= 7.4 > 3, so every completion is masked: weight 0, no update."""
    run = fit(tmp_path, max_steps=1, rollout_engine=ShiftedEngine(2.0, True))
    assert run.values[0]["train/tis_capped_frac/digits"] == 1.0
    assert run.values[0]["train/tis_weight/digits"] == 0.0
    assert torch.equal(update(run), torch.zeros_like(update(run)))


def test_resume_with_the_correction_is_bit_for_bit(tmp_path: Path) -> None:
    """3 steps in one go == 2 steps, checkpoint, resume to 3, with weights that are not 1
    (shift 0.1, token_truncate at cap 1.05): the correction holds no state of its own."""
    kwargs: dict[str, Any] = {
        "rollout_engine": ShiftedEngine(0.1),
        "importance_sampling": TruncatedImportanceSampling("token_truncate", cap=1.05),
    }
    full = fit(tmp_path / "full", max_steps=3, **kwargs)
    fit(tmp_path / "ckpt", max_steps=2, ckpt_every=2, **kwargs)
    path = next((tmp_path / "ckpt").glob("*step=2*.ckpt"))
    resumed = fit(tmp_path / "resumed", max_steps=3, ckpt_path=path, **kwargs)
    assert full.module is not None and resumed.module is not None
    for (name, a), (_, b) in zip(
        full.module.state_dict().items(), resumed.module.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert full.values[-1]["train/tis_capped_frac/digits"] == 1.0


def test_an_engine_without_log_probs_is_refused_when_the_correction_is_on(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"V01: importance_sampling=.*returned no log-probs"):
        fit(
            tmp_path,
            max_steps=1,
            rollout_engine=HFGenerate(logprobs=False),
            importance_sampling=TruncatedImportanceSampling(),
        )
