"""DPOModule on a tiny model: curves, gradient parts vs brute force, reference variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradbal.callbacks import PreferenceGradientMonitor, TaskGradNormMonitor
from gradbal.datamodules import MultiTaskDataModule
from gradbal.gradstats import TaskGradCapture
from gradbal.models import LoRA, TinyPolicy
from gradbal.modules import DPOModule
from gradbal.objectives import BPO, DPO, BalancedDPO, WithChosenNLL
from gradbal.tasks import PreferenceArithmetic, PreferenceFileTask, PreferenceFormat, PreferenceSort

NAMES = ("pref_format", "pref_add", "pref_sort")


def tasks() -> list[Any]:
    return [
        PreferenceFormat(n_train=32, n_val=4),
        PreferenceArithmetic(n_train=32, n_val=4),
        PreferenceSort(n_train=32, n_val=4),
    ]


def trainer(tmp_path: Path, max_steps: int, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("limit_val_batches", 0)
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def scalars(log_dir: str) -> dict[str, list[float]]:
    ea = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def policy(**kwargs: Any) -> TinyPolicy:
    return TinyPolicy(hidden_size=32, num_layers=1, **kwargs)


def test_fit_logs_preference_curves_and_gradient_parts(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = DPOModule(policy(), DPO(beta=0.1), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    monitors = [PreferenceGradientMonitor("all_linear", every_n_steps=1), TaskGradNormMonitor()]
    t = trainer(tmp_path, 3, limit_val_batches=2, callbacks=monitors)
    t.fit(module, MultiTaskDataModule(tasks(), batch_size=6, steps_per_epoch=3))
    reported = module.task_losses
    assert reported is not None and reported.parts is not None
    assert reported.losses.shape == (12,) and reported.parts.tolist() == [0] * 6 + [1] * 6
    assert reported.step == t.fit_loop.total_batch_idx  # the last training batch's report
    logged = scalars(t.logger.log_dir)  # type: ignore[union-attr]
    expected = {
        "train/loss",
        "train/rewards/chosen",
        "train/rewards/rejected",
        "train/rewards/margins",
        "train/rewards/accuracies",
        "train/logps/chosen",
        "train/logps/rejected",
        "train/grad_norm/chosen",
        "train/grad_norm/rejected",
        "train/grad_ratio/rejected_over_chosen",
        "train/grad_cos/chosen_rejected",
        "val/loss",
        "val/rewards/accuracies",
    }
    assert expected <= set(logged), expected - set(logged)
    assert len(logged["train/grad_ratio/rejected_over_chosen"]) == 3
    for name in NAMES:
        for group in ("rewards/accuracies", "logps/chosen", "grad_ratio/rejected_over_chosen"):
            assert any(k == f"train/{group}/{name}" for k in logged)
    assert any(k.startswith("val/rewards/accuracies/") for k in logged)
    assert any(k.startswith("train/grad_norm_sq_unbiased/") for k in logged)  # per-task monitor


class _KeepBatch(Callback):
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self.batch = batch


def test_monitor_matches_brute_force_autograd(tmp_path: Path) -> None:
    """One step at lr 0, then the two parts of each task recomputed with autograd.grad."""
    pl.seed_everything(1)
    module = DPOModule(
        policy(), BalancedDPO(beta=0.5), optimizer=lambda p: torch.optim.SGD(p, lr=0.0)
    )
    monitor, keep = PreferenceGradientMonitor("all_linear", every_n_steps=1), _KeepBatch()
    trainer(tmp_path, 1, callbacks=[monitor, keep]).fit(
        module, MultiTaskDataModule(tasks(), batch_size=8, steps_per_epoch=1)
    )
    assert monitor.parts is not None
    params = dict(module.named_parameters())
    measured = [params[n] for n in TaskGradCapture(module, "all_linear").measured_params]
    flat: dict[tuple[str, int], torch.Tensor] = {}
    for part in ("chosen", "rejected"):
        logps, task_ids = module.pair_logps(keep.batch)
        if part == "chosen":
            logps = logps._replace(policy_rejected_logps=logps.policy_rejected_logps.detach())
        else:
            logps = logps._replace(policy_chosen_logps=logps.policy_chosen_logps.detach())
        losses = module.objective(logps).losses / len(task_ids)  # the batch mean's shares
        for k in task_ids.unique().tolist():
            grads = torch.autograd.grad(losses[task_ids == k].sum(), measured, retain_graph=True)
            flat[part, k] = torch.cat([g.flatten() for g in grads]).double()
    parts = monitor.parts
    for (part, k), g in flat.items():
        measured_norm = (parts.chosen if part == "chosen" else parts.rejected)[k].item()
        assert measured_norm == pytest.approx(g.norm().item(), rel=1e-4)
    for k in task_ids.unique().tolist():
        ratio = flat["rejected", k].norm() / flat["chosen", k].norm()
        assert parts.ratio[k].item() == pytest.approx(ratio.item(), rel=1e-4)
    total_c = sum(v for (p, _), v in flat.items() if p == "chosen")
    total_r = sum(v for (p, _), v in flat.items() if p == "rejected")
    assert parts.total_ratio.item() == pytest.approx(
        (total_r.norm() / total_c.norm()).item(), rel=1e-4
    )  # type: ignore[union-attr]


def test_precomputed_reference_is_cached_and_keeps_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "ref"

    def fit(max_steps: int) -> tuple[DPOModule, pl.Trainer]:
        pl.seed_everything(0)
        module = DPOModule(
            policy(),
            WithChosenNLL(DPO(), weight=0.5),
            optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
            reference="precomputed",
            reference_cache_dir=str(cache),
        )
        t = trainer(tmp_path, max_steps, limit_val_batches=1)
        t.fit(module, MultiTaskDataModule(tasks(), batch_size=4, steps_per_epoch=1))
        return module, t

    module, t = fit(1)
    assert module.ref_model is None and module.ref_table is not None
    assert len(module.ref_table) > 0 and len(list(cache.glob("ref-*.arrow"))) == 6
    # policy == reference at lr 0: every implicit reward is 0, so the table matches the forward
    assert abs(float(t.callback_metrics["train/rewards/chosen"])) < 1e-5
    assert abs(float(t.callback_metrics["val/rewards/margins"])) < 1e-5

    def no_forward(*args: Any) -> Any:
        raise AssertionError("the reference log-probs should come from the cache")

    monkeypatch.setattr(DPOModule, "_reference_batch", no_forward)
    fit(1)  # a second run loads the Arrow cache instead of scoring again


def test_lora_uses_the_adapter_disabled_base(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = DPOModule(
        policy(lora=LoRA(r=2)),
        BPO(beta=0.1, alpha=0.5),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
    )
    t = trainer(tmp_path, 2)
    t.fit(module, MultiTaskDataModule(tasks(), batch_size=4, steps_per_epoch=2))
    assert t.global_step == 2 and module.ref_model is None
    assert "train/bpo/chosen_active" in t.callback_metrics


class _ChatPolicy(TinyPolicy):
    def build(self) -> Any:
        model, tok = super().build()
        tok.chat_template = (
            "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}"
        )
        return model, tok


def test_conversational_file_task_with_chat_template(tmp_path: Path) -> None:
    user = [{"role": "user", "content": "Capital of France?"}]
    rows = [
        {"prompt": user, "chosen": [{"role": "assistant", "content": "Paris"}],
         "rejected": [{"role": "assistant", "content": f"Rome{i}"}]}
        for i in range(6)
    ]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = PreferenceFileTask("capitals", data_files=str(path), validation_size=2)
    module = DPOModule(
        _ChatPolicy(hidden_size=32, num_layers=1), val_generate=True, val_max_new_tokens=4
    )
    t = trainer(tmp_path, 1, limit_val_batches=1)
    t.fit(module, MultiTaskDataModule([source], batch_size=2, steps_per_epoch=1))
    assert "val/accuracy/capitals" in t.callback_metrics  # greedy generation scored by the task
    assert "val/rewards/accuracies/capitals" in t.callback_metrics


def test_non_preference_task_is_rejected_at_setup(tmp_path: Path) -> None:
    from gradbal.tasks import Addition

    module = DPOModule(policy())
    with pytest.raises(ValueError, match="no 'chosen'/'rejected'"):
        trainer(tmp_path, 1).fit(module, MultiTaskDataModule([Addition(n_train=8, n_val=2)]))


def test_monitor_errors_say_how_to_fix(tmp_path: Path) -> None:
    from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

    with pytest.raises(ValueError, match="every_n_steps"):
        PreferenceGradientMonitor(every_n_steps=0)
    clash = MultiTaskDataModule([PreferenceFormat(name="chosen", n_train=8, n_val=2)])
    with pytest.raises(RuntimeError, match="Rename those tasks"):
        trainer(tmp_path, 1, callbacks=[PreferenceGradientMonitor(every_n_steps=1)]).fit(
            DPOModule(policy()), clash
        )
    # a module that reports task losses but not which rows are rejected completions
    monitor = PreferenceGradientMonitor(params=".*", every_n_steps=1)
    with pytest.raises(RuntimeError, match=r"parts=rejected\)"):
        trainer(tmp_path, 1, callbacks=[monitor]).fit(
            ThreeTaskClassifier(), MultiTaskDataModule(synthetic_tasks(), batch_size=6)
        )


def test_a_module_that_sets_the_older_rejected_rows_still_works_with_a_deprecation(
    tmp_path: Path,
) -> None:
    from gradbal.types import TaskLosses

    class LegacyDPO(DPOModule):
        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
            loss = super().training_step(batch, batch_idx)
            reported = self.task_losses
            assert reported is not None and reported.parts is not None
            # the contract before TaskLosses.parts: set by hand, split in an attribute
            self.task_losses = TaskLosses(reported.losses, reported.task_ids, reported.group_ids)
            self.rejected_rows = reported.parts.bool()
            return loss

    pl.seed_everything(0)
    monitor = PreferenceGradientMonitor("all_linear", every_n_steps=1)
    with pytest.warns(DeprecationWarning, match="rejected_rows is deprecated"):
        trainer(tmp_path, 2, callbacks=[monitor]).fit(
            LegacyDPO(policy()), MultiTaskDataModule(tasks(), batch_size=6, steps_per_epoch=2)
        )
    assert monitor.parts is not None and monitor.parts_step == 1
