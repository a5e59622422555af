"""docs/errors.md C05: two callbacks that set the DataModule's sampling probabilities in one
Trainer are refused at ``setup``, in either order, in Python and through ``gradbal fit --config``;
one scheduler alone, or beside a writer of other state (a loss reweighter), is accepted.

The doc's "what you get" cell is the message with ``…`` where it is abbreviated; every piece
between the ``…`` must appear in the real message, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from gradbal.callbacks import TaskGradNormMonitor, TaskLossReweighter, TaskSamplingScheduler
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import InverseGradNorm, TaskWeighting, Uniform
from tests.integration._errors_doc import FitStarted, assert_documented
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks


def fit(root: Path, callbacks: list[pl.Callback]) -> MultiTaskDataModule:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        callbacks=callbacks,
        default_root_dir=root,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4, seed=0)
    trainer.fit(ThreeTaskClassifier(), dm)
    return dm


RULES: dict[str, type[TaskWeighting]] = {"uniform": Uniform, "inverse_grad_norm": InverseGradNorm}


@pytest.mark.parametrize(
    "order", [("uniform", "inverse_grad_norm"), ("inverse_grad_norm", "uniform")], ids="-".join
)
def test_two_schedulers_are_refused_whichever_sets_up_first(
    order: tuple[str, str], tmp_path: Path
) -> None:
    first, second = (TaskSamplingScheduler(RULES[name](), every=1) for name in order)
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    FitStarted.started = False
    with pytest.raises(RuntimeError) as err:
        fit(tmp_path, [first, monitor, second, FitStarted()])
    message = str(err.value)
    assert message.startswith("C05: TaskSamplingScheduler and TaskSamplingScheduler both set")
    # the two are told apart, in the Trainer's order
    assert message.index(first.state_key) < message.index(second.state_key), message
    assert "Keep only one of ['TaskSamplingScheduler', 'TaskSamplingScheduler']" in message
    if order[0] == "uniform":
        assert_documented(message, "C", "C05")
    assert not FitStarted.started


def test_one_scheduler_beside_a_loss_reweighter_is_accepted(tmp_path: Path) -> None:
    """One writer per state: sampling probabilities and loss weights may be set side by side."""
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1)
    reweighter = TaskLossReweighter(Uniform())
    fit(tmp_path, [monitor, scheduler, reweighter])
    assert scheduler.schedule.num_updates > 0


TINY_DPO = Path(__file__).parents[2] / "configs" / "debug" / "tiny_dpo.yaml"


def scheduler_arg(rule: str) -> str:
    callback = {
        "class_path": "gradbal.callbacks.TaskSamplingScheduler",
        "init_args": {"rule": {"class_path": f"gradbal.weighting.{rule}"}},
    }
    return "--trainer.callbacks+=" + json.dumps(callback)


def test_c05_through_gradbal_fit(tmp_path: Path) -> None:
    """The shipped tiny config with two schedulers appended on the command line: exits before
    any step, with the documented message on stderr, and no checkpoint written."""
    cmd = [
        sys.executable,
        "-m",
        "gradbal",
        "fit",
        "--config",
        str(TINY_DPO),
        f"--trainer.default_root_dir={tmp_path}",
        scheduler_arg("Uniform"),
        scheduler_arg("InverseGradNorm"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TINY_DPO.parents[2])}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    stderr = " ".join(done.stderr.split())
    assert "RuntimeError: C05: " in stderr, done.stderr[-3000:]
    assert_documented(stderr, "C", "C05")
    assert not list(tmp_path.rglob("*.ckpt")), "nothing was trained, so nothing is saved"
