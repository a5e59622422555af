"""Every row of docs/errors.md: a bad input a user could write, and the error it gets.

One parametrised test per row, with the row's id (``E01``...). Each row runs the bad input and
checks the exception (or warning) type and fragments of the message: the value received and the
hint on how to fix it. ``SystemExit`` rows (the CLI's parser) check what was printed on stderr.
``test_doc_table_matches_the_rows`` keeps the doc table and this file in step.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub
import lightning.pytorch as pl
import pytest
import torch
from datasets import Dataset
from lightning.pytorch.plugins.precision import MixedPrecision

from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.cli import cli
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import LoRA, PretrainedPolicy, TinyPolicy
from gradbal.modules import DPOModule, GRPOModule
from gradbal.objectives import DPO
from gradbal.tasks import (
    Addition,
    ExactMatch,
    FileTask,
    PreferenceFileTask,
    Reverse,
    Task,
    TaskSource,
    score,
)
from gradbal.weighting import Fixed, GradProportional, InverseGradNorm, Uniform
from tests.integration._errors_doc import check_doc_rows
from tests.integration._three_tasks import NAMES, SCALES, SyntheticTask, ThreeTaskClassifier

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "errors.md"
TINY_GRPO = ROOT / "configs" / "debug" / "tiny_grpo.yaml"
QA = {"prompt": ["1+1=", "2+2="], "answer": ["2", "4"]}


@dataclass
class Ctx:
    """What a row may use: a fresh directory, monkeypatch, and the shared checkpoint."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    def checkpoint(self) -> Path:
        return Path(self.request.getfixturevalue("three_task_checkpoint"))


@dataclass(frozen=True)
class Row:
    """A bad input (``run``), the type it gets, and fragments its message must contain."""

    run: Callable[[Ctx], object]
    expected: type[BaseException] | type[Warning]
    fragments: tuple[str, ...]


# ---- helpers ---------------------------------------------------------------------------------


def qa_split(**columns: list[Any]) -> Dataset:
    return Dataset.from_dict(columns or QA)


def qa_task(name: str = "tiny_add", reward: Any = None, **splits: Dataset) -> Task:
    train = splits.get("train", qa_split())
    validation = splits.get("validation", qa_split())
    return Task(name, train=train, validation=validation, reward=reward or ExactMatch())


def two_task_dm(**kwargs: Any) -> MultiTaskDataModule:
    kwargs.setdefault("batch_size", 2)
    return MultiTaskDataModule(
        [Addition(n_train=8, n_val=2), Reverse(n_train=8, n_val=2)], **kwargs
    )


def three_task_dm(rows: int = 96, names: tuple[str, ...] = NAMES) -> MultiTaskDataModule:
    tasks: list[TaskSource] = [
        SyntheticTask(n, s, seed=i, rows=rows)
        for i, (n, s) in enumerate(zip(names, SCALES, strict=False))
    ]
    return MultiTaskDataModule(tasks, batch_size=12, steps_per_epoch=2)


def tiny() -> TinyPolicy:
    return TinyPolicy(hidden_size=32, num_layers=1)


def fit(
    ctx: Ctx,
    module: pl.LightningModule,
    dm: pl.LightningDataModule,
    callbacks: list[pl.Callback] | None = None,
    ckpt: Path | None = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        default_root_dir=ctx.tmp_path,
        callbacks=callbacks or [],
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return trainer


def jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def file_task(ctx: Ctx, rows: list[dict[str, Any]], suffix: str = ".jsonl", **kw: Any) -> Task:
    path = jsonl(ctx.tmp_path / f"data{suffix}", rows)
    files: dict[str, str | list[str]] = {"train": path, "validation": path}
    return FileTask("qa", data_files=files, cache_dir=str(ctx.tmp_path / "cache"), **kw).load()


def pretrained_dir(ctx: Ctx, *, pad: bool, eos: bool) -> str:
    """A saved tiny model whose tokenizer lacks the pad (and maybe the eos) token."""
    model, tok = tiny().build()
    model.save_pretrained(ctx.tmp_path)  # type: ignore[operator]
    if not pad:
        tok.pad_token = None
    if not eos:
        tok.eos_token = None
    tok.save_pretrained(ctx.tmp_path)
    return str(ctx.tmp_path)


def go_offline(ctx: Ctx) -> None:
    # The hub libraries read the variables at import time: patch their constants too, so the
    # test never waits on the network.
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        ctx.monkeypatch.setenv(var, "1")
    ctx.monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    ctx.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def offline_hub_dataset(ctx: Ctx) -> Task:
    go_offline(ctx)
    return FileTask("gsm", hub_name="some-org/some-dataset", cache_dir=str(ctx.tmp_path)).load()


def offline_hub_model(ctx: Ctx) -> object:
    go_offline(ctx)
    return PretrainedPolicy("some-org/some-model").build()


def bad_config(ctx: Ctx, old: str, new: str) -> str:
    text = TINY_GRPO.read_text()
    assert old in text
    path = ctx.tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new))
    return str(path)


def run_cli(ctx: Ctx, old: str, new: str) -> None:
    path = bad_config(ctx, old, new)
    cli(["fit", "--config", path, f"--trainer.default_root_dir={ctx.tmp_path}"])


def one_value(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [1.0]


def nan_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [math.nan] * len(prompts)


def crashing_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [1.0 / 0 for _ in prompts]


def score_with(reward: Any) -> list[float]:
    task = qa_task(reward=reward)
    return score(task, ["1+1=", "2+2="], ["2", "5"], [{}, {}], answers=["2", "4"])


class FusedAdamClassifier(ThreeTaskClassifier):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-2, fused=True)


def fp16_fused_with_clipping(ctx: Ctx) -> None:
    # fp16 AMP is not available on CPU through `precision=`; the plugin gives the same scaler.
    plugin = MixedPrecision("16-mixed", "cpu")
    fit(ctx, FusedAdamClassifier(), three_task_dm(), plugins=[plugin], gradient_clip_val=1.0)


def fp16_on_cpu(ctx: Ctx) -> None:
    trainer = pl.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert trainer.precision == "bf16-mixed"


# ---- the rows --------------------------------------------------------------------------------

ROWS: dict[str, Row] = {
    # tasks and data files
    "E01": Row(
        lambda ctx: qa_task(name="Math-QA"),
        ValueError,
        ("Got 'Math-QA'", "[a-z0-9_]+", "try 'math_qa'"),
    ),
    "E02": Row(
        lambda ctx: qa_task(train=qa_split(prompt=[], answer=[])),
        ValueError,
        ("the train split is empty (0 rows)", "Give it at least one row"),
    ),
    "E03": Row(
        lambda ctx: qa_task(
            train=qa_split(prompt=["1+1="], answer=[2]),
            validation=qa_split(prompt=["1+1="], answer=[2]),
        ),
        ValueError,
        ("column 'answer'", "must hold strings", "int64", "cast_column('answer'"),
    ),
    "E04": Row(
        lambda ctx: qa_task(validation=qa_split(prompt=["1+1="], answer=["2"], level=[1])),
        ValueError,
        ("same columns", "validation=['prompt', 'answer', 'level']", "Add or drop columns"),
    ),
    "E05": Row(
        lambda ctx: FileTask("qa", data_files=jsonl(ctx.tmp_path / "empty.jsonl", [])).load(),
        ValueError,
        ("empty.jsonl'] are empty (0 bytes)", "Fill them or remove them from data_files"),
    ),
    "E06": Row(
        lambda ctx: file_task(ctx, [{"prompt": "1+1=", "solution": "2"}]),
        ValueError,
        (
            "no 'answer' column",
            "Columns found: ['prompt', 'solution']",
            "column_mapping={'solution': 'answer'}",
        ),
    ),
    "E07": Row(
        lambda ctx: file_task(
            ctx, [{"prompt": "1+1=", "solution": "2"}], column_mapping={"solutoin": "answer"}
        ),
        ValueError,
        ("column_mapping names columns ['solutoin']", "Columns found", "Fix the keys"),
    ),
    "E08": Row(
        lambda ctx: file_task(ctx, [{"prompt": "1+1=", "answer": "2"}], suffix=".txt"),
        ValueError,
        ("data.txt", "suffix '.txt'", "pass format='json' | 'parquet' | 'csv'"),
    ),
    "E09": Row(
        lambda ctx: FileTask("qa", data_files=str(ctx.tmp_path / "trian.jsonl")).load(),
        FileNotFoundError,
        ("trian.jsonl' not found", "current working directory", "pass an absolute path"),
    ),
    "E10": Row(
        offline_hub_dataset,
        ConnectionError,
        ("'some-org/some-dataset'", "HF_HUB_OFFLINE=1", "pass local files instead"),
    ),
    "E11": Row(
        lambda ctx: PreferenceFileTask(
            "pref",
            data_files=jsonl(ctx.tmp_path / "p.jsonl", [{"prompt": "2+2=", "chosen": "4"}] * 3),
            validation_size=1,
            cache_dir=str(ctx.tmp_path / "cache"),
        ).load(),
        ValueError,
        ("'chosen' and 'rejected'", "columns ['prompt', 'chosen']", "column_mapping="),
    ),
    "E12": Row(
        lambda ctx: fit(ctx, DPOModule(tiny()), two_task_dm()),
        ValueError,
        ("task 'addition'", "no 'chosen'/'rejected'", "Use a preference task"),
    ),
    # the DataModule
    "E13": Row(
        lambda ctx: MultiTaskDataModule([Addition(n_train=8), Addition(n_train=8)]),
        ValueError,
        ("repeated: ['addition']", "Give each task its own `name`"),
    ),
    "E14": Row(
        lambda ctx: two_task_dm(sampling_probs={"addtion": 1.0, "reverse": 1.0}),
        ValueError,
        ("unknown ['addtion']", "missing ['addition']", "Use exactly these task names"),
    ),
    "E15": Row(
        lambda ctx: two_task_dm(sampling_probs=[0.5, 0.3, 0.2]),
        ValueError,
        ("2 tasks ['addition', 'reverse'], got 3 values [0.5, 0.3, 0.2]", "in task order"),
    ),
    "E16": Row(
        lambda ctx: two_task_dm(sampling_probs=[1.0, -0.5]),
        ValueError,
        ("non-negative, got [1.0, -0.5]", "Use 0 for a task that should never be sampled"),
    ),
    "E17": Row(
        lambda ctx: two_task_dm(sampling_probs=[math.nan, 1.0]),
        ValueError,
        ("must be finite, got [nan, 1.0]", "finite non-negative weight"),
    ),
    "E18": Row(
        lambda ctx: two_task_dm(sampling_probs=[0.0, 0.0]),
        ValueError,
        ("positive sum", "got [0.0, 0.0]", "at least one task a weight > 0"),
    ),
    "E19": Row(
        lambda ctx: two_task_dm().set_sampling_probs(torch.tensor([0.2, 0.3, 0.5])),
        ValueError,
        ("2 tasks ['addition', 'reverse'], got 3 values", "a dict {task_name: prob}"),
    ),
    "E20": Row(
        lambda ctx: two_task_dm(batch_size=0),
        ValueError,
        ("batch_size must be >= 1, got 0", "set a positive integer"),
    ),
    "E21": Row(
        lambda ctx: fit(
            ctx, ThreeTaskClassifier(), three_task_dm(names=NAMES[:2]), ckpt=ctx.checkpoint()
        ),
        ValueError,
        (
            "made with tasks ['small', 'medium', 'large']",
            "has ['small', 'medium']",
            "Resume with the same task list",
            "start a new run",
        ),
    ),
    "E22": Row(
        lambda ctx: fit(ctx, ThreeTaskClassifier(), three_task_dm(rows=64), ckpt=ctx.checkpoint()),
        ValueError,
        ("task sizes [96, 96, 96]", "this run has [64, 64, 64]", "Resume with the same task"),
    ),
    # models
    "E23": Row(
        lambda ctx: PretrainedPolicy(str(ctx.tmp_path / "no_such_model")).build(),
        FileNotFoundError,
        ("no_such_model' looks like a local path but does not exist", "save_pretrained"),
    ),
    "E24": Row(
        offline_hub_model,
        OSError,
        ("'some-org/some-model'", "HF_HUB_OFFLINE is set", "pass the local directory"),
    ),
    "E25": Row(
        lambda ctx: PretrainedPolicy(pretrained_dir(ctx, pad=False, eos=True)).build(),
        UserWarning,
        ("has no pad token; using eos as the pad token",),
    ),
    "E26": Row(
        lambda ctx: PretrainedPolicy(pretrained_dir(ctx, pad=False, eos=False)).build(),
        ValueError,
        ("neither a pad token nor an eos token", "add_special_tokens({'pad_token'"),
    ),
    "E27": Row(
        lambda ctx: TinyPolicy(
            hidden_size=32, num_layers=1, lora=LoRA(target_modules=["q_proj", "v_projj"])
        ).build(),
        ValueError,
        ("target_modules ['v_projj'] match no module", "'v_proj'", "target_modules='all-linear'"),
    ),
    # modules
    "E28": Row(
        lambda ctx: GRPOModule(tiny(), num_generations=1, scale_rewards="group"),
        ValueError,
        ("num_generations=1 with scale_rewards='group'", "Use num_generations >= 2"),
    ),
    "E29": Row(
        lambda ctx: GRPOModule(tiny(), max_new_tokens=0),
        ValueError,
        ("max_new_tokens must be >= 1, got 0", "at least one token"),
    ),
    "E30": Row(
        lambda ctx: GRPOModule(tiny(), temperature=0.0),
        ValueError,
        ("temperature must be > 0", "got 0.0"),
    ),
    "E31": Row(
        lambda ctx: GRPOModule(tiny(), beta=-0.1),
        ValueError,
        ("beta (KL coefficient) must be >= 0, got -0.1",),
    ),
    "E32": Row(
        lambda ctx: GRPOModule(tiny(), num_iterations=0),
        ValueError,
        ("num_iterations must be >= 1, got 0",),
    ),
    "E33": Row(
        lambda ctx: DPO(beta=0.0),
        ValueError,
        ("beta must be > 0", "Got 0.0", "Typical values are 0.01 to 0.5"),
    ),
    "E34": Row(
        lambda ctx: fit(ctx, GRPOModule(tiny(), task_names=["addition", "revers"]), two_task_dm()),
        ValueError,
        ("configured for tasks ['addition', 'revers']", "has ['addition', 'reverse']", "data:"),
    ),
    # callbacks and weighting rules
    "E35": Row(
        lambda ctx: fit(
            ctx,
            ThreeTaskClassifier(),
            three_task_dm(),
            [TaskSamplingScheduler(Fixed([1.0, 1.0]))],
        ),
        ValueError,
        ("Fixed(probs=[1.0, 1.0]) has 2 values but there are 3 tasks", "one value per task"),
    ),
    "E36": Row(
        lambda ctx: fit(
            ctx,
            ThreeTaskClassifier(),
            three_task_dm(),
            [TaskSamplingScheduler(Uniform(), floor=0.5)],
        ),
        RuntimeError,
        ("floor=0.5 with 3 tasks", "Set floor <= 0.3333"),
    ),
    "E37": Row(
        lambda ctx: TaskLossReweighter(InverseGradNorm(), ema=1.0),
        ValueError,
        ("`ema` must be in [0, 1). Got 1.0",),
    ),
    "E38": Row(
        lambda ctx: GradProportional(power=-1.0),
        ValueError,
        ("`power` > 0. Got -1.0", "InverseGradNorm", "Uniform instead of 0"),
    ),
    "E39": Row(
        lambda ctx: fit(
            ctx, ThreeTaskClassifier(), three_task_dm(), [TaskSamplingScheduler(InverseGradNorm())]
        ),
        RuntimeError,
        ("exactly one TaskGradNormMonitor", "found 0", "Add `TaskGradNormMonitor(...)`"),
    ),
    "E40": Row(
        lambda ctx: fit(
            ctx,
            ThreeTaskClassifier(),
            three_task_dm(),
            [TaskGradNormMonitor(params="last_attn_block")],
        ),
        ValueError,
        ("'last_attn_block' selects no module", "['net.0', 'net.2']", "'last_attention_block'"),
    ),
    "E41": Row(
        lambda ctx: fit(ctx, ThreeTaskClassifier(), three_task_dm(), [LearningGainMonitor()]),
        RuntimeError,
        ("'train/reward/small'", "were not logged", "'train/accuracy/small'", "set `metric`"),
    ),
    "E42": Row(
        lambda ctx: LearningGainMonitor(metric="train/reward"),
        ValueError,
        ("must contain '{task}'", "Got 'train/reward'", "e.g. 'train/reward/{task}'"),
    ),
    # rewards
    "E43": Row(
        lambda ctx: score_with(one_value),
        ValueError,
        ("returned 1 values for 2 completions", "one per completion"),
    ),
    "E44": Row(
        lambda ctx: score_with(nan_reward),
        ValueError,
        ("returned nan", "prompt='1+1='", "Rewards must be finite"),
    ),
    "E45": Row(
        lambda ctx: score_with(crashing_reward),
        RuntimeError,
        ("raised ZeroDivisionError", "prompt='1+1='", "Fix the reward"),
    ),
    # precision
    "E46": Row(
        fp16_on_cpu,
        UserWarning,
        ("precision='16-mixed')` but AMP with fp16 is not supported on CPU", "bf16-mixed"),
    ),
    "E47": Row(
        fp16_fused_with_clipping,
        RuntimeError,
        ("AdamW, does not allow for gradient clipping", "'fused' optimizer"),
    ),
    # the YAML config (gradbal fit --config)
    "E48": Row(
        lambda ctx: run_cli(ctx, "max_steps: 4", "max_stepz: 4"),
        SystemExit,
        ("does not accept option 'trainer.max_stepz'", "fit --help"),
    ),
    "E49": Row(
        lambda ctx: run_cli(ctx, "num_generations: 4", "num_generationz: 4"),
        SystemExit,
        ("'gradbal.modules.GRPOModule'", "Option 'num_generationz' is not accepted", "fit --help"),
    ),
    "E50": Row(
        lambda ctx: run_cli(ctx, "GRPOAggregation", "GRPOAggregatoin"),
        SystemExit,
        ("loss_aggregation", "has no attribute 'GRPOAggregatoin'", "fit --help"),
    ),
    "E51": Row(
        lambda ctx: run_cli(
            ctx, "batch_size: 4", "batch_size: 4\n    sampling_probs: {additon: 1}"
        ),
        ValueError,
        ("unknown ['additon']", "missing ['addition', 'reverse']", "Use exactly these task names"),
    ),
}


@pytest.fixture(scope="module")
def three_task_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a 2-step fit on the three synthetic tasks (96 rows each)."""
    root = tmp_path_factory.mktemp("three_tasks")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ThreeTaskClassifier(), three_task_dm())
    path = root / "three_tasks.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("row_id", list(ROWS))
def test_error(
    row_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    row = ROWS[row_id]
    ctx = Ctx(tmp_path, monkeypatch, request)
    if issubclass(row.expected, Warning):
        with pytest.warns(row.expected) as record:
            row.run(ctx)
        message = "\n".join(str(w.message) for w in record)
    else:
        with pytest.raises(row.expected) as info:
            row.run(ctx)
        message = capsys.readouterr().err if row.expected is SystemExit else str(info.value)
    missing = [fragment for fragment in row.fragments if fragment not in message]
    assert not missing, f"{row_id}: {missing} not found in:\n{message}"


def test_doc_table_matches_the_rows() -> None:
    check_doc_rows("E", {row_id: row.expected for row_id, row in ROWS.items()})
    count = re.search(r"How this table is checked: `[^`]+`\s*\((\d+) rows\)", DOC.read_text())
    assert count is not None and int(count.group(1)) == len(ROWS)
