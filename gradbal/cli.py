"""The ``gradbal`` command: LightningCLI over any LightningModule and DataModule.

``gradbal fit --config configs/toy/grpo_multitask.yaml`` (also ``validate``, ``test``,
``--print_config`` and dotted overrides such as ``--trainer.max_steps=10``).

``gradbal report RUN_DIR [RUN_DIR ...] [--out DIR]`` is not a LightningCLI subcommand: it draws
figures and a Markdown summary from finished runs' event files (:mod:`gradbal.report`, needs
``pip install 'gradbal[report]'``; docs/report.md).
"""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import OnExceptionCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

# Importing these lets YAML use short class names (class_path: GRPOModule).
from gradbal import callbacks, datamodules, models, modules, objectives, tasks  # noqa: F401
from gradbal.callbacks import FaultCheckpoint

# MultiTaskDataModule's stream defines __len__ (the epoch length) and always runs in-process
# (num_workers=0), so Lightning's warning about __len__ under multi-process loading cannot apply.
warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined")
# With OnExceptionCheckpoint on by default, Lightning asks for "last" on every fit and warns when
# there is none, which is the normal case (nothing crashed): not worth a warning on every run.
warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last')


class GradbalCLI(LightningCLI):
    """LightningCLI that declares the task list once, under ``data:``.

    ``data.task_names`` is linked into ``model.init_args.task_names`` when both are built, so
    configs never repeat the task list. Unless the config says otherwise, the trainer shows a
    rich progress bar (step, loss, mean reward) and an exception, interrupt or SIGTERM leaves a
    checkpoint in ``<default_root_dir>/checkpoints/on_exception.ckpt`` and prints the command
    that resumes from it (:class:`~gradbal.callbacks.FaultCheckpoint`). Running the same command
    again resumes from it (Lightning turns a missing ``ckpt_path`` into ``"last"`` when that
    callback is present); delete the file to start over.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        self._argv = [str(a) for a in argv] if isinstance(argv, list) else sys.argv[1:]
        super().__init__(*args, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.task_names", "model.init_args.task_names", apply_on="instantiate"
        )

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={}) or {}
        configured = list(kwargs.pop("callbacks", None) or config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            configured.append(RichProgressBar())
        if not any(isinstance(c, OnExceptionCheckpoint) for c in configured):
            root = Path(config.get("default_root_dir") or Path.cwd())
            configured.append(
                FaultCheckpoint(
                    dirpath=str(root / "checkpoints"), resume_command=_command(self._argv)
                )
            )
        return super().instantiate_trainer(callbacks=configured, **kwargs)


def _command(argv: list[str]) -> str:
    """The ``gradbal`` command line of ``argv`` without any ``--ckpt_path``, shell-quoted."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
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


def main() -> None:
    """``gradbal``'s entry point (:func:`gradbal.entry.main`, which dispatches ``report`` first)."""
    from gradbal.entry import main as entry_main

    entry_main()


if __name__ == "__main__":
    main()
