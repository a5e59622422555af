"""``gradbal report`` on a real short run, on a two-run comparison, and on partial logs."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from gradbal.cli import cli
from gradbal.entry import main
from gradbal.report import read_scalars, report_main
from gradbal.tasks import Reverse, Task

CONFIG = str(Path(__file__).parents[2] / "configs/debug/tiny_grpo.yaml")
FIGURE_FILES = (
    "grad_norm_sq.png",
    "sampling_probs.png",
    "reward.png",
    "val_accuracy.png",
    "grad_norm_vs_gain.png",
)
WIDTH, HEIGHT = 1000, 600  # figures.FIGSIZE at figures.DPI
TASKS = ("narrow", "wide")


class AlphabetShare(Reverse):
    """``Reverse`` prompts rewarded by the share of completion characters in ``alphabet``.

    A dense reward that a random policy already earns, so a few steps of a tiny model have
    non-zero rewards and gradients; a narrow alphabet makes a sparser reward than a wide one.
    """

    def load(self) -> Task:
        task = super().load()
        alphabet = set(self.alphabet)

        def reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
            return [sum(c in alphabet for c in text) / max(len(text), 1) for text in completions]

        return Task(
            task.name,
            train=task.train,
            validation=task.validation,
            reward=reward,
            success_threshold=0.25,
        )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step tiny GRPO run with the gradient, sampling and learning-gain callbacks."""
    root = tmp_path_factory.mktemp("run")
    share = f"{__name__}.AlphabetShare"
    extra = {
        "trainer": {
            "max_steps": 6,
            "log_every_n_steps": 1,
            "limit_val_batches": 2,
            "default_root_dir": str(root),
            "callbacks": [
                {
                    "class_path": "gradbal.callbacks.TaskGradNormMonitor",
                    "init_args": {"every_n_steps": 1},
                },
                {
                    "class_path": "gradbal.callbacks.TaskSamplingScheduler",
                    "init_args": {
                        "rule": {"class_path": "gradbal.weighting.InverseGradNorm"},
                        "every": 2,
                        "floor": 0.3,  # both tasks in every step: curves for both
                    },
                },
                {
                    "class_path": "gradbal.callbacks.LearningGainMonitor",
                    "init_args": {"window": 2},
                },
            ],
        },
        "model": {"init_args": {"num_generations": 4, "max_new_tokens": 4}},
        "data": {
            "init_args": {
                "tasks": [
                    {
                        "class_path": share,
                        "init_args": {"name": "narrow", "alphabet": "abcdefghijkl", "n_train": 64},
                    },
                    {
                        "class_path": share,
                        "init_args": {
                            "name": "wide",
                            "alphabet": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                            "n_train": 64,
                        },
                    },
                ],
                "batch_size": 8,
            }
        },
    }
    override = root / "report_run.yaml"
    override.write_text(yaml.safe_dump(extra))
    run = cli(["fit", "--config", CONFIG, "--config", str(override)])
    assert run.trainer.global_step == 6
    return root


def assert_png(path: Path) -> None:
    """A PNG of the fixed figure size that is not one flat colour."""
    import matplotlib.image

    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", path
    assert struct.unpack(">II", header[16:24]) == (WIDTH, HEIGHT), path
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[-1]).tolist()}
    assert len(colours) > 10, (path, len(colours))


def write_events(log_dir: Path, curves: dict[str, list[tuple[int, float]]]) -> None:
    with SummaryWriter(str(log_dir)) as writer:
        for tag, points in curves.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)


def test_the_run_logs_every_curve_the_report_draws(run_dir: Path) -> None:
    scalars = read_scalars(run_dir)
    for group in ("grad_norm_sq_unbiased", "sampling_prob", "reward", "learning_gain"):
        for task in TASKS:
            assert f"train/{group}/{task}" in scalars, (group, task, sorted(scalars))
    assert any(tag.startswith("val/accuracy/") for tag in scalars)
    assert any(v > 0 for t in TASKS for _, v in scalars[f"train/grad_norm_sq_unbiased/{t}"])
    steps = [step for step, _ in scalars["train/reward/wide"]]
    assert steps == list(range(6))  # one point per step, sorted


def test_report_of_one_run(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([str(run_dir)]) == 0
    out = run_dir / "report"
    assert f"{out / 'summary.md'} with 5 of 5 figures" in capsys.readouterr().out
    for name in FIGURE_FILES:
        assert_png(out / name)
    summary = (out / "summary.md").read_text()
    assert "Tasks: narrow, wide." in summary
    for name in FIGURE_FILES:
        assert f"]({name})" in summary
    assert "Skipped figures" not in summary
    label = run_dir.name  # the run's default label
    assert f"| {label} | narrow |" in summary and f"| {label} | wide |" in summary


def test_report_comparing_two_runs(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # several runs: the default output is ./report
    assert report_main([str(run_dir), str(run_dir), "--smooth", "3"]) == 0
    out = tmp_path / "report"
    for name in FIGURE_FILES:
        assert_png(out / name)
    summary = (out / "summary.md").read_text()
    label = run_dir.name
    for task in TASKS:
        assert f"| {label} | {task} |" in summary and f"| {label} (2) | {task} |" in summary
    assert "moving average over 3 logged points" in summary


def test_read_scalars_merges_versions_in_numeric_order(tmp_path: Path) -> None:
    logs = tmp_path / "lightning_logs"
    write_events(logs / "version_2", {"train/reward/a": [(s, float(s)) for s in range(6)]})
    # Resumed from a checkpoint at step 3: the crashed run's steps 3-5 were done again; the
    # value logged last at a step wins (204, not 104).
    write_events(
        logs / "version_10",
        {"train/reward/a": [(3, 103.0), (4, 104.0), (4, 204.0)], "train/kl": [(4, 7.0)]},
    )
    merged = read_scalars(tmp_path)
    assert merged == {
        "train/kl": [(4, 7.0)],
        "train/reward/a": [(0, 0.0), (1, 1.0), (2, 2.0), (3, 103.0), (4, 204.0)],
    }
    assert read_scalars(logs / "version_2")["train/reward/a"][-1] == (5, 5.0)


def test_missing_tags_skip_figures_and_are_named(tmp_path: Path) -> None:
    rewards = {
        f"train/reward/{t}": [(s, s / (10 + i)) for s in range(10)] for i, t in enumerate(TASKS)
    }
    write_events(tmp_path / "run" / "lightning_logs" / "version_0", rewards)
    assert report_main([str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "report"
    assert_png(out / "reward.png")
    for name in FIGURE_FILES:
        assert (out / name).exists() == (name == "reward.png"), name
    summary = (out / "summary.md").read_text()
    skipped = summary.split("## Skipped figures", 1)[1].split("##", 1)[0]
    for name in set(FIGURE_FILES) - {"reward.png"}:
        assert f"`{name}`" in skipped
    assert "`train/grad_norm_sq_unbiased/<task> (or train/grad_norm/<task>)`" in skipped
    assert "`train/sampling_prob/<task>`" in skipped and "`val/accuracy/<task>`" in skipped


def test_grad_norm_fallback_and_reward_gain(tmp_path: Path) -> None:
    curves = {
        "train/grad_norm/narrow": [(0, 0.5), (1, -0.1), (2, 0.4)],
        "train/grad_norm/wide": [(0, 2.0), (1, 3.0), (2, 2.5)],
        "train/reward/narrow": [(s, 0.1 * s) for s in range(5)],
        "train/reward/wide": [(s, 0.01 * s) for s in range(5)],
    }
    write_events(tmp_path / "events", curves)
    assert report_main([str(tmp_path / "events"), "--out", str(tmp_path / "out")]) == 0
    for name in ("grad_norm_sq.png", "grad_norm_vs_gain.png", "reward.png"):
        assert_png(tmp_path / "out" / name)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "1 of 6 points are <= 0" in summary and "`train/grad_norm/<task>` squared" in summary
    # Mean squared norms 0.133 (narrow: 0.25, -0.01, 0.16) and 6.42 (wide): ratio 48.1.
    # Reward gains (last point minus first) 0.4 and 0.04: the larger gradient gains less, so
    # Spearman's rho across the two tasks is -1.
    assert "| events | 48.1 | -1 | reward gain" in summary


def test_no_event_files_is_an_error_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    monkeypatch.setattr(sys, "argv", ["gradbal", "report", str(empty)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "No TensorBoard event files" in err and str(empty) in err


def test_missing_matplotlib_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    assert report_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'gradbal[report]'" in err


def test_report_command_does_not_load_lightning(tmp_path: Path) -> None:
    """``gradbal report`` starts in seconds: the LightningCLI is not imported."""
    import subprocess

    code = (
        "import sys\n"
        "sys.argv = ['gradbal', 'report', sys.argv[1]]\n"
        "from gradbal.entry import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED' if 'lightning' in sys.modules else 'LIGHT')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith("LIGHT"), out.stdout
