"""The ``gradbal`` command: LightningCLI over any LightningModule and DataModule.

``gradbal fit --config configs/toy/grpo_multitask.yaml`` (also ``validate``, ``test``,
``--print_config`` and dotted overrides such as ``--trainer.max_steps=10``).

``gradbal report RUN_DIR [RUN_DIR ...] [--out DIR]`` is not a LightningCLI subcommand: it draws
figures and a Markdown summary from finished runs' event files (:mod:`gradbal.report`, needs
``pip install 'gradbal[report]'``; docs/report.md).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    Checkpoint,
    OnExceptionCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from typing_extensions import override

# Importing these lets YAML use short class names (class_path: GRPOModule).
from gradbal import callbacks, datamodules, models, modules, objectives, schedules, tasks  # noqa: F401
from gradbal.callbacks import CheckpointConfig, FaultCheckpoint, PeriodicCheckpoint
from gradbal.callbacks.checkpoint_files import newest_valid, read_checkpoint
from gradbal.checkpoint_io import AtomicCheckpointIO
from gradbal.resume import ResumeError, RunLock, check_resume, other_run_notice, run_id

# MultiTaskDataModule's stream defines __len__ (the epoch length) and always runs in-process
# (num_workers=0), so Lightning's warning about __len__ under multi-process loading cannot apply.
warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined")


class GradbalCLI(LightningCLI):
    """LightningCLI that declares the task list once, under ``data:``, and never loses a run.

    ``data.task_names`` is linked into ``model.init_args.task_names`` when both are built, so
    configs never repeat the task list. Unless the config says otherwise, the trainer shows a
    rich progress bar (step, loss, mean reward) and gets, for ``fit``:

    * a run directory ``<default_root_dir>/checkpoints/<run_name>/``: ``run_name`` defaults to a
      hash of the config without its length and logging fields (:func:`gradbal.resume.run_id`),
      so the same command finds the same directory and another config its own; a lock file
      stops a second process of the same run;
    * :class:`~gradbal.callbacks.PeriodicCheckpoint` (``last.ckpt`` every 100 steps or 30
      minutes, and at the end) unless the config has a ``ModelCheckpoint`` or one of its own,
      written atomically by :class:`~gradbal.checkpoint_io.AtomicCheckpointIO`;
    * :class:`~gradbal.callbacks.FaultCheckpoint`: an exception, interrupt or SIGTERM saves
      ``on_exception.ckpt`` there and prints the command that resumes from it;
    * :class:`~gradbal.callbacks.CheckpointConfig`: the resolved config goes into every
      checkpoint, and ``--resume_lr`` decides what a changed learning rate does on resume;
    * an automatic resume: without ``--ckpt_path`` it resumes from the newest checkpoint of the
      run directory that loads; with one, it first checks the file and prints how the config
      differs from the checkpoint's (:func:`gradbal.resume.check_resume`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        self._argv = [str(a) for a in argv] if isinstance(argv, list) else sys.argv[1:]
        self._run_dir: str | None = None
        self._lock: RunLock | None = None
        self._plain: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.task_names", "model.init_args.task_names", apply_on="instantiate"
        )
        parser.add_argument(
            "--resume_lr",
            type=Literal["ask", "checkpoint", "config"],
            default="ask",
            help="When a resume changes the learning rate: ask (stop and say), checkpoint "
            "(keep the restored one) or config (apply the new one).",
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run's checkpoint directory under <default_root_dir>/checkpoints; "
            "default: a hash of the config (the same command resumes the same run).",
        )

    def _setup_run(self) -> str:
        """The resolved config as plain values (``self._plain``) and the run directory."""
        if self._run_dir is None:
            subcommand = self.config.get("subcommand")
            config = self.config[subcommand] if subcommand else self.config
            plain = config.clone().as_dict()
            plain.pop("config", None)  # the paths of the YAML files, not their content
            # Plain JSON values only: the config is stored in checkpoints, which load with
            # torch.load(weights_only=True) by default.
            self._plain = dict(json.loads(json.dumps(plain, default=str)))
            root = (self._plain.get("trainer") or {}).get("default_root_dir") or Path.cwd()
            name = self._plain.get("run_name") or run_id(self._plain)
            self._run_dir = str(Path(root) / "checkpoints" / name)
        return self._run_dir

    @override
    def _parse_ckpt_path(self) -> None:
        """Refuse a ``--ckpt_path`` that does not load, before anything is built.

        LightningCLI would also replace the model's arguments by the hyperparameters saved in
        the checkpoint. gradbal does not: the config given is the config used, and the resume
        check prints how it differs from the checkpoint's (:func:`gradbal.resume.check_resume`).
        """
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            self._setup_run()
            try:
                read_checkpoint(path)
            except ValueError as error:
                raise ResumeError(
                    f"Cannot resume: {error}. The file is truncated, still being written, or "
                    "not a checkpoint; it was left as it is. Pass another --ckpt_path (a run's "
                    "directory keeps last.ckpt and on_exception.ckpt), or start over: "
                    f"{self._fresh_command()}"
                ) from error

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={}) or {}
        configured = list(kwargs.pop("callbacks", None) or config.get("callbacks") or [])
        self._setup_run()
        assert self._run_dir is not None
        plain = self._plain
        name = os.path.basename(self._run_dir)
        command = _command(self._argv)
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            configured.append(RichProgressBar())
        if not any(isinstance(c, (OnExceptionCheckpoint, FaultCheckpoint)) for c in configured):
            configured.append(FaultCheckpoint(dirpath=self._run_dir, resume_command=command))
        if config.get("enable_checkpointing") is not False:
            periodic = [c for c in configured if isinstance(c, PeriodicCheckpoint)]
            if not any(isinstance(c, Checkpoint) for c in configured):
                periodic.append(PeriodicCheckpoint())
                configured.append(periodic[-1])
            for callback in periodic:
                callback.dirpath = callback.dirpath or self._run_dir
        if not any(isinstance(c, CheckpointConfig) for c in configured):
            configured.append(
                CheckpointConfig(
                    config=plain,
                    run_id=name,
                    resume_lr=plain.get("resume_lr") or "ask",
                    fresh_command=self._fresh_command(),
                )
            )
        plugins = kwargs.pop("plugins", None) or config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        strategy = str(config.get("strategy") or "")
        if not any(isinstance(p, CheckpointIO) for p in plugins) and "deepspeed" not in strategy:
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(callbacks=configured, plugins=plugins, **kwargs)

    def _fresh_command(self) -> str:
        """The command that starts this config over in a new run directory (deleting nothing)."""
        assert self._run_dir is not None
        if not any(Path(self._run_dir).glob("*.ckpt")):
            return _command(self._argv)  # nothing here to resume: the plain command starts over
        base = os.path.basename(self._run_dir)
        index = 2
        while os.path.exists(os.path.join(os.path.dirname(self._run_dir), f"{base}-{index}")):
            index += 1
        return f"{_command(self._argv, drop=('--run_name',))} --run_name {base}-{index}"

    def before_fit(self) -> None:
        """Lock the run directory, pick the checkpoint to resume, check it against the config."""
        assert self._run_dir is not None
        if _launched_as_rank_zero():
            self._lock = RunLock(self._run_dir)
            self._lock.acquire(self._fresh_command())
        try:
            self._choose_checkpoint()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            raise

    def _choose_checkpoint(self) -> None:
        assert self._run_dir is not None
        fit_config = self.config_init[self.subcommand]
        path = fit_config.get("ckpt_path")
        automatic = path is None or path == "last"  # "last": this run's newest, as for none
        if automatic:
            dirs = [self._run_dir]
            dirs += [
                str(c.dirpath)
                for c in self.trainer.callbacks  # type: ignore[attr-defined]
                if isinstance(c, PeriodicCheckpoint) and c.dirpath
            ]
            found = newest_valid(dict.fromkeys(dirs))
            if found is None:
                if not _launched_as_rank_zero():
                    return
                print(
                    f"[gradbal] Checkpoints of this run: {self._run_dir} (none yet: "
                    "starting at step 0; the same command resumes from there).",
                    file=sys.stderr,
                    flush=True,
                )
                notice = other_run_notice(self._run_dir, self._plain, _command(self._argv))
                if notice is not None:
                    print(notice, file=sys.stderr, flush=True)
                return
            path = found[0]
            fit_config["ckpt_path"] = path
            if _launched_as_rank_zero():
                print(
                    f"[gradbal] Resuming this run's newest checkpoint {path} (step {found[1]}); "
                    f"to start over instead: {self._fresh_command()}",
                    file=sys.stderr,
                    flush=True,
                )
        if isinstance(path, str) and (path in ("best", "hpc", "registry") or "://" in path):
            return  # Lightning resolves these
        check_resume(
            str(path),
            self._plain,
            getattr(self.datamodule, "task_names", None),
            self._fresh_command(),
            announce=not automatic,
            quiet=not _launched_as_rank_zero(),
        )

    def fit(self, model: LightningModule, **kwargs: Any) -> None:
        """``trainer.fit``, with a clear error when the checkpoint's weights do not fit."""
        try:
            self.trainer.fit(model, **kwargs)
        except RuntimeError as error:
            if kwargs.get("ckpt_path") is None or "Error(s) in loading state_dict" not in str(
                error
            ):
                raise
            details = str(error).split(":", 1)[-1].strip().splitlines()[:6]
            raise ResumeError(
                f"Cannot resume {kwargs['ckpt_path']}: its weights do not fit this config's "
                "model (another size or architecture; the checkpoint was left as it is):\n  "
                + "\n  ".join(line.strip() for line in details)
                + "\nResume with the model settings the checkpoint was made with (see the "
                f"summary above), or start over: {self._fresh_command()}"
            ) from error
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def _launched_as_rank_zero() -> bool:
    """Whether this process is rank 0 (or alone), by the launchers' environment variables."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _command(argv: list[str], drop: tuple[str, ...] = ()) -> str:
    """The ``gradbal`` command line of ``argv`` without ``--ckpt_path`` (and ``drop``), quoted."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--ckpt_path", *drop):
            skip = True
        elif not any(arg.startswith(f"{flag}=") for flag in ("--ckpt_path", *drop)):
            args.append(arg)
    return shlex.join(["gradbal", *args])


def cli(args: list[str] | None = None, run: bool = True) -> GradbalCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    return GradbalCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli()
