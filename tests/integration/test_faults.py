"""Faults lose nothing: exact GRPO resume, SIGTERM, non-finite losses and statistics, bad rewards.

The resume tests compare an uninterrupted GRPO run of ``N`` steps with a run stopped at ``K``
and resumed to ``N``, bit for bit on CPU: parameters, sampling probabilities, every callback's
state and every logged per-task metric. GRPO samples its completions, so this also checks that
generation draws the same tokens after a resume (``GRPOModule.generation_seed``).
"""

from __future__ import annotations

import math
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks import (
    FaultCheckpoint,
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskSamplingScheduler,
)
from gradbal.cli import cli
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.nonfinite_loss import NonFiniteLossError
from gradbal.tasks import Addition, Reverse, Task
from gradbal.weighting import InverseGradNorm
from tests._compare import same_state

N, K = 6, 3
TINY_GRPO = Path(__file__).parents[2] / "configs" / "debug" / "tiny_grpo.yaml"


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call: ``(step, {name: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step or 0), {k: float(v) for k, v in metrics.items()}))

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def per_task(self) -> dict[tuple[int, str], float]:
        """Every per-task value (``<stage>/<group>/<task>``) by (step, name); no timings."""
        return {
            (step, name): value
            for step, values in self.rows
            for name, value in values.items()
            if name.count("/") >= 2
        }


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM at the end of optimiser step ``step`` (as a scheduler would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def grpo_module(**kwargs: Any) -> GRPOModule:
    return GRPOModule(
        TinyPolicy(hidden_size=32, num_layers=1),
        num_generations=4,
        max_new_tokens=6,
        scale_rewards="none",
        **kwargs,
    )


def datamodule() -> MultiTaskDataModule:
    tasks = [Addition(n_train=64, n_val=4), Reverse(n_train=64, n_val=4)]
    return MultiTaskDataModule(tasks, batch_size=6, steps_per_epoch=4, seed=3)


def balancing_callbacks() -> list[pl.Callback]:
    return [
        TaskGradNormMonitor(every_n_steps=1, seed=5),
        TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5, floor=0.1),
        LearningGainMonitor(window=1, metric="train/reward/{task}"),
    ]


def fit(
    root: Path,
    max_steps: int,
    callbacks: list[pl.Callback],
    ckpt_path: Path | None = None,
    module: GRPOModule | None = None,
) -> tuple[GRPOModule, MultiTaskDataModule, pl.Trainer, MemoryLogger]:
    pl.seed_everything(0)
    module = module or grpo_module()
    dm = datamodule()
    logger = MemoryLogger()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        log_every_n_steps=1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, dm, trainer, logger


def callback_states(trainer: pl.Trainer) -> list[Any]:
    return [
        cb.state_dict()
        for cb in trainer.callbacks  # type: ignore[attr-defined]
        if isinstance(cb, (TaskGradNormMonitor, TaskSamplingScheduler, LearningGainMonitor))
    ]


def assert_same_run(
    full: tuple[GRPOModule, MultiTaskDataModule, pl.Trainer, MemoryLogger],
    parts: list[MemoryLogger],
    resumed: tuple[GRPOModule, MultiTaskDataModule, pl.Trainer, MemoryLogger],
) -> None:
    module, dm, trainer, logger = full
    r_module, r_dm, r_trainer, _ = resumed
    assert r_trainer.global_step == trainer.global_step == N
    for (name, a), (_, b) in zip(
        module.state_dict().items(), r_module.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert dm.sampling_probs == r_dm.sampling_probs
    assert same_state(callback_states(trainer), callback_states(r_trainer))
    stitched: dict[tuple[int, str], float] = {}
    for part in parts:
        stitched.update(part.per_task())
    expected = logger.per_task()
    assert any("grad_norm_sq_unbiased" in name for _, name in expected)
    assert any("sampling_prob" in name for _, name in expected)
    assert stitched == expected


def test_grpo_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Run to N == run to K, checkpoint, resume to N: generation, sampler, callbacks, metrics."""
    full = fit(tmp_path / "full", N, balancing_callbacks())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=K, save_top_k=-1)
    first = fit(tmp_path / "part", K, [*balancing_callbacks(), ckpt])
    path = next((tmp_path / "ckpt").glob(f"*step={K}*.ckpt"))
    resumed = fit(tmp_path / "resumed", N, balancing_callbacks(), ckpt_path=path)
    assert_same_run(full, [first[3], resumed[3]], resumed)


def test_sigterm_leaves_a_checkpoint_that_resumes_bit_for_bit(tmp_path: Path) -> None:
    full = fit(tmp_path / "full", N, balancing_callbacks())
    fault = FaultCheckpoint(dirpath=str(tmp_path / "ckpt"))
    logger_holder: list[MemoryLogger] = []

    class KeepLogger(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
            logger_holder.append(trainer.logger)  # type: ignore[arg-type]

    with pytest.raises(SIGTERMException):
        fit(tmp_path / "part", N, [*balancing_callbacks(), SigtermAt(K), KeepLogger(), fault])
    path = Path(fault.ckpt_path)
    assert path.is_file()
    assert torch.load(path, weights_only=False)["global_step"] == K
    resumed = fit(tmp_path / "resumed", N, balancing_callbacks(), ckpt_path=path)
    assert_same_run(full, [logger_holder[0], resumed[3]], resumed)


def test_cli_prints_the_resume_command_and_it_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    args = [
        "fit",
        "--config",
        str(TINY_GRPO),
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=4",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks+=tests.integration.test_faults.SigtermAt",
        "--trainer.callbacks.step=2",
    ]
    with pytest.raises(SIGTERMException):
        cli(args)
    err = capsys.readouterr().err
    (ckpt,) = (root / "checkpoints").glob("run-*/on_exception.ckpt")
    saved = ckpt.read_bytes()
    assert "Stopped by SIGTERM at step 2" in err
    command = err.split("Resume with: ")[1].strip().split()
    assert command[0] == "gradbal" and command[-2:] == ["--ckpt_path", str(ckpt)]
    # The printed command resumes (without the callback that sent SIGTERM).
    resumed = cli(
        [a for a in command[1:-2] if "SigtermAt" not in a and "step=2" not in a]
        + [
            "--ckpt_path",
            str(ckpt),
        ]
    )
    assert resumed.trainer.global_step == 4
    # A finished run deletes only what its own process wrote: not the checkpoint it resumed.
    assert ckpt.read_bytes() == saved


class NaNAt(GRPOModule):
    """A GRPO module whose policy log-probs are NaN at one step (a numerical blow-up)."""

    def __init__(self, nan_step: int, **kwargs: Any) -> None:
        super().__init__(TinyPolicy(hidden_size=32, num_layers=1), num_generations=4, **kwargs)
        self.nan_step = nan_step

    def _policy_logprobs(self, seqs: Any) -> Tensor:
        out = super()._policy_logprobs(seqs)
        return out * math.nan if self.global_step == self.nan_step else out


def test_nonfinite_loss_skip_keeps_weights_and_probabilities_finite(tmp_path: Path) -> None:
    class Snapshot(pl.Callback):
        def __init__(self) -> None:
            self.before: dict[str, Tensor] = {}
            self.after: dict[str, Tensor] = {}

        def on_train_batch_start(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
            if trainer.global_step == 2:
                self.before = {k: v.clone() for k, v in module.state_dict().items()}

        def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
            if self.before and not self.after:
                self.after = {k: v.clone() for k, v in module.state_dict().items()}

    snap = Snapshot()
    module = NaNAt(2, max_new_tokens=6, on_nonfinite_loss="skip")
    with pytest.warns(RuntimeWarning, match=r"loss is nan at optimiser step 2.*skipped"):
        _, dm, trainer, _ = fit(tmp_path, 5, [*balancing_callbacks(), snap], module=module)
    for name, value in snap.before.items():  # the NaN step changed nothing
        assert torch.equal(value, snap.after[name]), name
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert all(math.isfinite(p) for p in dm.sampling_probs)
    # Lightning still calls optimizer.step (no parameter has a gradient, so nothing changes) and
    # counts the step: max_steps=5 ran 5 batches.
    assert trainer.global_step == 5


def test_nonfinite_loss_stop_raises_and_checkpoints_the_last_good_state(tmp_path: Path) -> None:
    fault = FaultCheckpoint(dirpath=str(tmp_path / "ckpt"))
    module = NaNAt(2, max_new_tokens=6)  # default: stop
    with pytest.raises(NonFiniteLossError, match=r"nan at optimiser step 2.*on_nonfinite_loss"):
        fit(tmp_path, 5, [*balancing_callbacks(), fault], module=module)
    state = torch.load(fault.ckpt_path, weights_only=False)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_nonfinite_statistic_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """An infinite gradient statistic never reaches the sampling probabilities."""

    class Corrupt(pl.Callback):  # runs after the monitor measured, before the scheduler reads
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            monitor = next(c for c in trainer.callbacks if isinstance(c, TaskGradNormMonitor))  # type: ignore[attr-defined]
            if trainer.global_step == 2 and monitor.stats is not None:
                monitor.stats.unbiased_sq[1] = math.inf

    monitor, scheduler, gains = balancing_callbacks()
    with pytest.warns(RuntimeWarning, match=r"skipped non-finite statistics \{'reverse': inf\}"):
        _, dm, _, _ = fit(tmp_path, 4, [monitor, Corrupt(), scheduler, gains])
    assert all(math.isfinite(p) and p > 0 for p in dm.sampling_probs)
    assert all(math.isfinite(v) for v in scheduler.state_dict()["average"])


def _flaky_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """Raises on a completion of odd length, else 1.0: a buggy parser."""
    if any(len(c) % 2 for c in completions):
        raise ValueError("cannot parse an odd length")
    return [1.0] * len(completions)


class FlakyTask:
    name = "flaky"

    def load(self) -> Task:
        base = Addition(n_train=32, n_val=4).load()
        return Task("flaky", train=base.train, validation=base.validation, reward=_flaky_reward)


def test_reward_errors_raise_with_task_and_example_or_score_zero(tmp_path: Path) -> None:
    def run(policy: str) -> tuple[MemoryLogger, list[warnings.WarningMessage]]:
        pl.seed_everything(0)
        dm = MultiTaskDataModule([FlakyTask(), Reverse(n_train=32, n_val=4)], batch_size=4)
        module = grpo_module(on_reward_error=policy)  # type: ignore[arg-type]
        logger = MemoryLogger()
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=3,
            limit_val_batches=0,
            log_every_n_steps=1,
            logger=logger,
            enable_progress_bar=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path / policy,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, dm)
        return logger, caught

    with pytest.raises(
        RuntimeError, match=r"Task 'flaky'.*cannot parse an odd length.*prompt='add "
    ):
        run("raise")
    logger, caught = run("zero")
    errors = [
        v for (_, name), v in logger.per_task().items() if name == "train/reward_errors/flaky"
    ]
    assert errors and sum(errors) > 0 and all(float(v).is_integer() for v in errors)
    assert any("train/reward_errors/flaky" in str(w.message) for w in caught)
