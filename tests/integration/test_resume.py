"""Checkpoints and resume under ``gradbal fit``: nothing a user runs can lose or destroy a run.

The fault scenarios run the real ``gradbal fit`` in child processes (``_fault_child.py`` sends
the signal at a chosen moment; the reruns are plain ``python -m gradbal fit``), on
configs/debug/tiny_grpo.yaml with a periodic checkpoint every 2 steps; the kill -9 scenario
with both of ``HFGenerate``'s samplers. The failed resumes run
in-process (``gradbal.cli.cli``): the point there is what happens to the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gradbal.callbacks import FaultCheckpoint, PeriodicCheckpoint
from gradbal.callbacks.checkpoint_config import ResumeLRError
from gradbal.callbacks.checkpoint_files import newest_valid, read_checkpoint
from gradbal.cli import cli
from gradbal.resume import ResumeError, RunLock
from tests.integration._errors_doc import check_doc_rows

ROOT = Path(__file__).parents[2]
TINY_GRPO = ROOT / "configs" / "debug" / "tiny_grpo.yaml"
CHILD = Path(__file__).parent / "_fault_child.py"


def fit_args(root: Path, max_steps: int, *extra: str, config: Path = TINY_GRPO) -> list[str]:
    return [
        "fit",
        "--config",
        str(config),
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_steps={max_steps}",
        "--trainer.limit_val_batches=0",
        *extra,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def gradbal(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gradbal", *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


def child(mode: str, n: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(CHILD), mode, str(n), *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


def run_dir(root: Path) -> Path:
    (directory,) = (root / "checkpoints").iterdir()
    return directory


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (the lock file aside) and its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]  # type: ignore[no-any-return]


# The rollout engine's sampler: the default, and the inverse-CDF draw (its own logits processor,
# drawing from the global torch RNG under the step's generation seed).
SAMPLERS = {
    "multinomial": (),
    "inverse_cdf": (
        "--model.init_args.rollout_engine.class_path=gradbal.rollout.HFGenerate",
        "--model.init_args.rollout_engine.init_args.sampler=inverse_cdf",
    ),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_kill9_mid_run_and_mid_save_then_the_same_command_finishes_the_same_run(
    tmp_path: Path, sampler: str
) -> None:
    reference = cli(fit_args(tmp_path / "ref", 6, *SAMPLERS[sampler]))
    assert reference.model.rollout_engine.sampler == sampler
    expected = weights(run_dir(tmp_path / "ref") / "last.ckpt")
    assert reference.trainer.global_step == 6
    args = fit_args(tmp_path / "run", 6, *SAMPLERS[sampler])

    killed = child("kill_after_step", 3, args)  # kill -9 between two periodic saves
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = run_dir(tmp_path / "run") / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 2

    killed = child("kill_in_save", 1, args)  # resumes at 2, killed half-way through saving 4
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "(step 2)" in killed.stderr
    partial = list(last.parent.glob(".last.ckpt.tmp-*"))
    assert partial and partial[0].stat().st_size > 0  # the write had started
    assert read_checkpoint(last)["global_step"] == 2  # the previous file still loads

    rerun = gradbal(args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resuming this run's newest checkpoint {last} (step 2)" in rerun.stderr
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == 6
    assert final["state_dict"].keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final["state_dict"][name], value), name


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose run crashed at step 3: last.ckpt (step 2), on_exception.ckpt (3)."""
    root = tmp_path_factory.mktemp("crashed")
    args = fit_args(root, 6, "--trainer.callbacks+=tests.integration.test_faults.SigtermAt")
    with pytest.raises(SIGTERMException):
        cli([*args, "--trainer.callbacks.step=3"])
    directory = run_dir(root)
    assert read_checkpoint(directory / "on_exception.ckpt")["global_step"] == 3
    assert read_checkpoint(directory / "last.ckpt")["global_step"] == 2
    return directory


def resume_args(directory: Path, *extra: str, config: Path = TINY_GRPO) -> list[str]:
    """Resume ``directory``'s exception checkpoint, saving into that same directory."""
    source = directory / "on_exception.ckpt"
    root = directory.parent.parent
    return fit_args(
        root, 6, f"--run_name={directory.name}", f"--ckpt_path={source}", *extra, config=config
    )


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            ["--model.init_args.policy.init_args.hidden_size=64"],
            ResumeError,
            "weights do not fit this config's model",
        ),
        (["ONE_TASK"], ResumeError, r"made with tasks \['addition', 'reverse'\]"),
        (["--model.init_args.optimizer.init_args.lr=0.002"], ResumeLRError, "--resume_lr="),
    ],
    ids=["model_size", "task_list", "learning_rate"],
)
def test_a_failed_resume_leaves_every_checkpoint_byte_identical(
    crashed: Path,
    tmp_path: Path,
    change: list[str],
    error: type[Exception],
    match: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = TINY_GRPO
    if change == ["ONE_TASK"]:
        text = TINY_GRPO.read_text()
        config = tmp_path / "one_task.yaml"
        config.write_text(
            text[: text.index("      - class_path: gradbal.tasks.Reverse")]
            + "    batch_size: 4\n    steps_per_epoch: 2\n"
        )
        change = []
    before = snapshot(crashed)
    with pytest.raises(error, match=match) as raised:
        cli(resume_args(crashed, *change, config=config))
    assert "start over: gradbal fit" in str(raised.value) or "--resume_lr=config" in str(
        raised.value
    )
    assert snapshot(crashed) == before
    if change and "hidden_size" in change[0]:  # the summary names what changed
        assert "policy.init_args.hidden_size: 32 -> 64" in capsys.readouterr().err


def test_a_truncated_checkpoint_is_refused_and_left_as_it_is(crashed: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    data = (crashed / "on_exception.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    before = snapshot(crashed)
    args = [*fit_args(tmp_path, 6), f"--ckpt_path={truncated}"]
    with pytest.raises(ResumeError, match=r"truncated.ckpt does not load.*start over: gradbal"):
        cli(args)
    assert truncated.read_bytes() == data[: len(data) // 2]
    assert snapshot(crashed) == before


def test_a_resume_with_smaller_max_steps_deletes_and_writes_nothing(crashed: Path) -> None:
    before = snapshot(crashed)
    args = resume_args(crashed, "--trainer.max_steps=1")
    run = cli([a for a in args if not a.startswith("--ckpt_path")])  # automatic resume
    assert run.trainer.global_step == 3  # the newest: on_exception.ckpt
    assert snapshot(crashed) == before


@pytest.mark.parametrize(("choice", "lr"), [("checkpoint", 1e-3), ("config", 2e-3)])
def test_resume_lr_keeps_or_applies_the_new_learning_rate_and_the_summary_says_so(
    crashed: Path,
    tmp_path: Path,
    choice: str,
    lr: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "checkpoints" / crashed.name
    shutil.copytree(crashed, copy)
    new = ["--model.init_args.optimizer.init_args.lr=0.002", "--data.init_args.batch_size=2"]
    args = resume_args(copy, *new, f"--resume_lr={choice}", "--trainer.max_steps=4")
    with pytest.warns(UserWarning, match=f"lr 0.001, the config 0.002.*resume_lr={choice}"):
        run = cli(args)
    assert run.trainer.global_step == 4
    assert run.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr)
    err = capsys.readouterr().err
    assert "model.init_args.optimizer.init_args.lr: 0.001 -> 0.002" in err
    assert "data.init_args.batch_size: 4 -> 2" in err


def test_two_concurrent_runs_in_one_root_one_sigtermed_both_resume(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    a_args, b_args = fit_args(root, 4), fit_args(root, 4, "--seed_everything=1")
    cmd = [sys.executable, str(CHILD), "sigterm_after_step", "3", *a_args]
    a = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    b = gradbal(b_args)
    _, a_err = a.communicate(timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    assert a.returncode == 143 and "Stopped by SIGTERM at step 3" in a_err
    dirs = sorted((root / "checkpoints").iterdir())
    assert len(dirs) == 2  # one directory per run
    command = a_err.split("Resume with: ")[1].strip().split()
    a_ckpt = Path(command[-1])
    assert a_ckpt.is_file()  # B's clean exit did not delete A's checkpoint
    (b_last,) = (d / "last.ckpt" for d in dirs if d != a_ckpt.parent)
    b_saved = b_last.read_bytes()
    assert command[0] == "gradbal"
    assert cli(command[1:]).trainer.global_step == 4  # A's printed command resumes
    assert cli(b_args).trainer.global_step == 4  # B's command resumes its finished run
    assert b_last.read_bytes() == b_saved


def test_a_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    args = fit_args(tmp_path, 2)
    directory = cli(args[1:], run=False)._run_dir
    assert directory is not None
    lock = RunLock(directory)
    lock.acquire("unused")
    try:
        with pytest.raises(RuntimeError, match=r"Another process \(pid \d+\) is running this"):
            cli(args)
    finally:
        lock.release()


def test_defaults_and_a_user_checkpoint_callback(tmp_path: Path) -> None:
    no_callbacks = tmp_path / "bare.yaml"
    text = TINY_GRPO.read_text()
    no_callbacks.write_text(text[: text.index("  callbacks:")] + text[text.index("model:") :])
    run = cli(["--config", str(no_callbacks), f"--trainer.default_root_dir={tmp_path}"], run=False)
    periodic = [c for c in run.trainer.callbacks if isinstance(c, PeriodicCheckpoint)]
    assert len(periodic) == 1 and periodic[0].dirpath == run._run_dir
    assert (periodic[0].every_n_steps, periodic[0].every_n_minutes) == (100, 30.0)
    assert any(isinstance(c, FaultCheckpoint) for c in run.trainer.callbacks)
    user = cli(
        [
            "--config",
            str(no_callbacks),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks+=ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=5",
        ],
        run=False,
    )
    assert not any(isinstance(c, PeriodicCheckpoint) for c in user.trainer.callbacks)
    assert len([c for c in user.trainer.callbacks if isinstance(c, ModelCheckpoint)]) == 1


def test_automatic_resume_skips_a_checkpoint_that_does_not_load(
    crashed: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(crashed, copy)
    data = (copy / "on_exception.ckpt").read_bytes()
    (copy / "on_exception.ckpt").write_bytes(data[:1000])
    with pytest.warns(UserWarning, match=r"Skipping a checkpoint that cannot resume.*on_exc"):
        found = newest_valid([copy])
    assert found == (str(copy / "last.ckpt"), 2)


def test_periodic_checkpoint_rejects_a_bad_period() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be >= 1 or null, got 0"):
        PeriodicCheckpoint(every_n_steps=0)


def test_errors_doc_rows() -> None:
    check_doc_rows(
        "R",
        {
            "R01": ResumeError,
            "R02": ResumeError,
            "R03": ResumeError,
            "R04": ResumeLRError,
            "R05": RuntimeError,
            "R06": ValueError,
            "R07": UserWarning,
        },
    )
