"""Step time and peak memory of gradbal against TRL on the same model, data and settings (CPU).

Two comparisons, each on the tiny Llama-style policy of ``configs/toy`` (TinyPolicy, hidden 128,
3 layers, seed 0, byte-level tokenizer), built identically in both frameworks:

* GRPO: TRL ``GRPOTrainer`` (transformers generation, no vLLM) vs gradbal ``GRPOModule`` under a
  Lightning ``Trainer``, and gradbal with ``TaskGradNormMonitor`` measuring every step. One
  optimizer step = 8 prompts x 8 completions of at most 12 tokens, generated once, DAPO token
  mean, no KL, no reward scaling, AdamW 5e-5, gradient norm clipped at 1.0, the same prompts in
  the same order (the gradbal sampler's batches, handed to TRL as an unshuffled dataset) and the
  same rewards (the built-in tasks' reward functions).
* DPO: TRL ``DPOTrainer`` vs gradbal ``DPOModule``, 32 pairs per step from the three built-in
  preference tasks, sigmoid loss, beta 0.1, with a frozen reference copy and, separately, with
  reference log-probs precomputed before training.

Every run is its own subprocess (so peak RSS is that run's) with ``torch.set_num_threads`` and
``OMP_NUM_THREADS`` set to ``--threads``; runs alternate between frameworks, reversing the order
every repeat, so slow drift of the machine hits both. A callback records ``time.perf_counter()``
at each optimizer step's start and end (TRL ``on_step_begin``/``on_step_end``, Lightning
``on_train_batch_start``/``on_train_batch_end``); after ``--warmup`` steps, "s/step" is the
median interval between consecutive step ends (the full cycle, data loading included), pooled
over repeats, and "in-hook" the median start-to-end time. Results are printed as Markdown;
nothing is written unless ``--json`` is given. Time only on an idle machine (``uptime`` load
below 1): the table's spread column shows how far single runs disagree.

``--check`` first runs each configuration once, untimed, with probes on the model: initial
weights, the token ids of step 1's prompts (GRPO) or pairs (DPO), generation shapes, the policy
forwards in step 1 and how far step 1 moved the parameters. ``--profile`` replaces the timing by
one GRPO run per configuration split into sections (generate, reward, policy forward, backward,
clipping, optimizer update, the rest of the step, between steps), then a cProfile of one run per
framework.

    .venv/bin/pip install trl==1.16.0        # or: pip install -e ".[bench]"
    .venv/bin/python benchmarks/vs_trl.py --which all --repeats 5 --steps 20 --threads 2
    .venv/bin/python benchmarks/vs_trl.py --which all --repeats 1 --steps 3 --warmup 1 --check
    .venv/bin/python benchmarks/vs_trl.py --which grpo --steps 12 --warmup 2 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import dataclasses
import functools
import hashlib
import importlib
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
POLICY = {"family": "llama", "hidden_size": 128, "num_layers": 3, "seed": 0}
DATA_SEED, TRAIN_SEED, N_TRAIN, N_VAL = 1, 0, 300, 20
GRAD_CLIP = 1.0
# GRPO settings per model (--model). Both frameworks get the same values.
GRPO_SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "prompts": 8,
        "generations": 8,
        "max_new_tokens": 12,
        "lr": 5e-5,
        "temperature": 1.0,
        "beta": 0.0,
        "scale_rewards": "none",
    },
    # configs/real/grpo_multitask.yaml's algorithm: LoRA r16 on every linear layer, KL to the
    # base model (adapters disabled), 4 prompts x 4 completions of up to 48 tokens, T 0.7.
    "smollm2": {
        "prompts": 4,
        "generations": 4,
        "max_new_tokens": 48,
        "lr": 2e-5,
        "temperature": 0.7,
        "beta": 0.04,
        "scale_rewards": "group",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
    },
}
GRPO = GRPO_SETTINGS["tiny"]  # replaced by main()/worker() for --model
DPO_SETTINGS = {"pairs": 32, "beta": 0.1, "lr": 1e-3}
GRPO_CONFIGS_BY_MODEL = {
    "tiny": ("trl", "gradbal", "gradbal+monitor", "gradbal (full forward)"),
    # (a) matched: fp32, no gradient checkpointing; (b) each at its defaults / recommended
    "smollm2": (
        "trl",
        "gradbal",
        "gradbal+monitor",
        "gradbal (full forward)",
        "trl (defaults)",
        "gradbal (recommended)",
        "gradbal (inverse-CDF sampler)",
    ),
}
GRPO_CONFIGS = GRPO_CONFIGS_BY_MODEL["tiny"]
SHIPPED = "smollm2-135m-instruct"
DPO_CONFIGS = ("trl", "gradbal", "trl (precomputed ref)", "gradbal (precomputed ref)")

UNMATCHED_GRPO = [
    "Sampling: both draw with `torch.multinomial` in HF `generate` (temperature 1, top_p 1, "
    "top_k 0) but from differently advanced RNG streams, so the completions differ. The random "
    "policy rarely emits eos (about 1/259 per token), so almost every completion runs to the "
    "12-token limit in both and the work per step is the same (`--check` prints the lengths).",
    "Generation batching: TRL's RepeatSampler repeats each prompt 8 times (64 prompt rows, "
    "`num_return_sequences=1`); gradbal generates the 8 prompts with `num_return_sequences=8`, "
    "which HF expands to the same 64 rows inside `generate`. TRL tokenizes the 64 repeated "
    "prompts every step, gradbal the 8 distinct ones.",
    "Log-prob head: TRL patches the policy with a chunked LM head "
    "(`trl.trainer.utils.add_fused_lm_head`) that on CPU (no Triton) projects every position, "
    "prompt included, and also computes per-token entropy for its metrics; gradbal materialises "
    "logits for the last C+1 positions only (`logits_to_keep`). Cheap here (vocabulary 259).",
    "Position ids: gradbal passes mask-based position ids to the training forward, as "
    "`generate` uses; TRL passes none, so a left-padded prompt is scored at shifted positions. "
    "Changes values, not cost.",
    "Per-step bookkeeping: each framework keeps its own metrics (TRL: reward mean/std, "
    "completion lengths, entropy, clip ratios with `.item()` calls, even with "
    "`logging_strategy='no'`; gradbal: per-task means through `self.log` to a null logger). "
    "Both count as part of the step; neither writes anything.",
    "Learning rate: TRL steps a constant LambdaLR scheduler every step; gradbal has none. TRL's "
    "AdamW has two parameter groups (decay / no decay, both 0.0), gradbal's one.",
    "Data: TRL's DataLoader (accelerate `DataLoaderShard`, RepeatSampler, identity collate) vs "
    "gradbal's `MultiTaskDataModule` stream; the prompts per step are identical (`--check`).",
    "Shared prompt: gradbal's policy and reference forwards encode each prompt once per group "
    "and repeat its KV cache for the G completions (`share_prompt_forward`, on by default; "
    "generation shares the prompt's prefill the same way); TRL encodes each prompt once per "
    "completion in both. 'gradbal (full forward)' turns the training-forward sharing off.",
    "Old log-probs: with num_iterations=1 and steps_per_generation=1 TRL skips the old-policy "
    "forward (`old_per_token_logps=None`, ratio from `per_token_logps.detach()`), as gradbal "
    "does (`old_logprobs=None`): one policy forward with grad per step in both.",
    "Memory: peak RSS is the whole process, imports and data included ('RSS at step 1' is the "
    "baseline before the first step).",
]
UNMATCHED_GRPO_REAL = [
    "Sampling: both sample at T 0.7 from differently advanced RNG streams, so the completions, "
    "their lengths and the work per step differ; the table's last column gives the mean "
    "completion length each framework generated (timed steps).",
    "Chat template: TRL gets conversational prompts (`[{'role': 'user', ...}]`) and applies "
    "the tokenizer's template; gradbal's `prompt_format='auto'` applies the same template "
    "(`--check` compares the prompt token ids).",
    "LoRA: the same peft config (r 16, alpha 32, dropout 0, all linear layers), applied by TRL "
    "(`peft_config=`) and by gradbal's `LoRA`; the adapters' random init differs.",
    "KL reference: both score the reference with the adapters disabled (no second model).",
    "Defaults: TRL's `GRPOConfig` turns on bf16 autocast and gradient checkpointing; "
    "'gradbal (recommended)' uses the precision, dtype and gradient checkpointing that "
    "configs/real/grpo_multitask.yaml ships.",
    "Generation batching, log-prob head, position ids, per-step bookkeeping, learning-rate "
    "scheduler, data pipeline and old log-probs as in the toy comparison.",
    "Sampler: TRL and 'gradbal' draw each token with `torch.multinomial` inside HF `generate` "
    "(about 15 ms per token for 16 rows of a 49,152-token vocabulary on this CPU); 'gradbal "
    "(inverse-CDF sampler)' is 'gradbal' with `HFGenerate(sampler='inverse_cdf')`, which draws "
    "the same distribution with one uniform per row (about 1.3 ms), other tokens for the seed.",
]
UNMATCHED_DPO = [
    "Padding: TRL right-pads the concatenated prompt+completion (width max(P_i + C_i)); gradbal "
    "left-pads prompts and right-pads completions (width max P + max C), so gradbal's rows can "
    "be a few tokens wider (`--check` prints both shapes).",
    "Log-prob head: TRL's chunked LM head projects every position and, for the policy, also "
    "computes entropy, mean logit and top-1 agreement for its metrics; gradbal materialises "
    "logits for the last C+1 positions.",
    "Reference 'model': both keep a frozen deep copy of the initial policy. TRL gets it as "
    "`ref_model=copy.deepcopy(model)`, because without one it reloads the model by hub id, which "
    "an in-memory model does not have.",
    "Reference 'precomputed': TRL scores its train dataset (steps x 32 pairs) in `__init__`; "
    "gradbal scores every pair of every task's train and validation split in `setup` (the "
    "'setup s' column); no reference forward in the step in either.",
    "Truncation: none in either (TRL `max_length=None`, gradbal no max lengths); the built-in "
    "pairs are short. Learning rate, parameter groups, metrics and data pipeline as for GRPO.",
]


# ---- shared pieces -------------------------------------------------------------------------


def rss_mb(key: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def weights_sha(model: nn.Module) -> str:
    """Hash of the base weights: LoRA adapters left out, peft's name prefixes stripped (so a
    model wrapped by gradbal and one wrapped by TRL hash alike)."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        name = name.replace("base_model.model.", "").replace(".base_layer", "")
        digest.update(name.encode())
        digest.update(p.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def completion_lengths(out: Tensor, prompt_width: int, eos_id: int) -> Tensor:
    """Tokens per completion of ``generate``'s output: up to and including the first eos."""
    completions = out[:, prompt_width:]
    is_eos = completions == eos_id
    return torch.where(
        is_eos.any(1), is_eos.int().argmax(1) + 1, torch.tensor(completions.shape[1])
    )


def meter_lengths(model: nn.Module, eos_id: int, lengths: list[float]) -> None:
    """Append the mean completion length of every ``model.generate`` call to ``lengths``.

    The frameworks sample from different RNG streams, so on a real model their completions,
    and the work per step, differ; the tables report the mean length next to the time.
    """
    original = model.generate  # type: ignore[operator]

    def generate(*args: Any, **kwargs: Any) -> Tensor:
        out = original(*args, **kwargs)
        width = kwargs["input_ids"].shape[1]
        lengths.append(float(completion_lengths(out, width, eos_id).float().mean()))
        return out

    model.generate = generate  # type: ignore[method-assign]


class LengthBonus:
    """A task's reward plus 0.001 x the completion's length in characters (``--check`` only).

    The random policy's task rewards are nearly all 0, so most groups have no spread, every
    advantage is 0 and no parameter moves; the bonus differs between completions of a group, so
    the check can see one step change the parameters. Timed runs use the plain rewards.
    """

    def __init__(self, reward: Any) -> None:
        self.reward = reward

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        rewards = self.reward(prompts, completions, **columns)
        return [r + 1e-3 * len(c) for r, c in zip(rewards, completions, strict=True)]


class WithLengthBonus:
    """Task source whose loaded task scores with :class:`LengthBonus` (in both frameworks)."""

    def __init__(self, source: Any) -> None:
        self.source, self.name = source, source.name

    def load(self) -> Any:
        task = self.source.load()
        return dataclasses.replace(task, reward=LengthBonus(task.reward))


def grpo_datamodule(steps: int, length_bonus: bool) -> Any:
    """The model's tasks (toy: the toy config's five; SmolLM2: the four chat tasks of
    configs/real/grpo_demo.yaml), ``GRPO["prompts"]`` prompts per step, seeded sampler."""
    from gradbal.datamodules import MultiTaskDataModule
    from gradbal.tasks import (
        Addition,
        ChatAddition,
        ChatComparison,
        ChatMultiplication,
        ChatWordProblem,
        CountChar,
        Countdown,
        Reverse,
        Sort,
    )

    n = {"n_train": N_TRAIN, "n_val": N_VAL}
    tasks: list[Any]
    if GRPO is GRPO_SETTINGS["smollm2"]:
        tasks = [ChatAddition(**n), ChatMultiplication(**n), ChatComparison(**n)]
        tasks.append(ChatWordProblem(**n))
    else:
        tasks = [
            Addition(min_digits=1, max_digits=2, **n),
            Countdown(num_numbers=3, max_number=9, min_used=2, **n),
            Reverse(min_len=4, max_len=8, **n),
            Sort(min_len=4, max_len=8, **n),
            CountChar(min_len=6, max_len=12, alphabet="abc", **n),
        ]
    if length_bonus:
        tasks = [WithLengthBonus(t) for t in tasks]
    return MultiTaskDataModule(
        tasks, batch_size=GRPO["prompts"], steps_per_epoch=steps, seed=DATA_SEED
    )


def dpo_datamodule(steps: int) -> Any:
    from gradbal.datamodules import MultiTaskDataModule
    from gradbal.tasks import PreferenceArithmetic, PreferenceFormat, PreferenceSort

    n = {"n_train": N_TRAIN, "n_val": N_VAL}
    tasks = [PreferenceFormat(**n), PreferenceArithmetic(min_digits=1, max_digits=2, **n)]
    tasks.append(PreferenceSort(min_len=4, max_len=8, **n))
    return MultiTaskDataModule(
        tasks, batch_size=DPO_SETTINGS["pairs"], steps_per_epoch=steps, seed=DATA_SEED
    )


def scheduled_batches(datamodule: Any, steps: int) -> list[dict[str, Any]]:
    """The first ``steps`` batches a fresh copy of ``datamodule`` yields (TRL gets these rows)."""
    datamodule.setup("fit")
    stream = iter(datamodule.train_dataloader())
    return [next(stream) for _ in range(steps)]


def peak_rss_mb() -> float:
    """The process's resident-memory high-water mark since the last :func:`reset_peak_rss`."""
    return rss_mb("VmHWM")


def reset_peak_rss() -> None:
    """Restart the high-water mark at the current RSS (Linux ``clear_refs``; no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


OUTSIDE = "outside the sections"


class Sections:
    """Exclusive wall time per named section: time inside nested sections is not counted twice.

    Also each section's peak RSS (``peaks``, MB; a parent's peak includes its children's), read
    from the kernel's high-water mark, which is reset at each section's start.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.peaks: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [name, start, time spent in children, peak MB]
        self.active = False

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        if self._stack:  # the parent's peak so far, before the reset hides it
            self._stack[-1][3] = max(self._stack[-1][3], peak_rss_mb())
        else:
            self.peaks[OUTSIDE] = max(self.peaks[OUTSIDE], peak_rss_mb())
        reset_peak_rss()
        self._stack.append([name, time.perf_counter(), 0.0, 0.0])
        try:
            yield
        finally:
            _, start, children, peak = self._stack.pop()
            elapsed = time.perf_counter() - start
            peak = max(peak, peak_rss_mb())
            self.totals[name] += elapsed - children
            self.peaks[name] = max(self.peaks[name], peak)
            if self._stack:
                self._stack[-1][2] += elapsed
                self._stack[-1][3] = max(self._stack[-1][3], peak)

    def wrap(self, owner: Any, attribute: str, name: str) -> bool:
        original = getattr(owner, attribute, None)
        if original is None:
            return False

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.section(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        return True


class Probe:
    """What the model saw: generation shapes, the first grad forward, parameter change (--check)."""

    def __init__(self, model: nn.Module, eos_id: int) -> None:
        self.model, self.eos_id = model, eos_id
        self.info: dict[str, Any] = {"weights_sha": weights_sha(model), "generate": []}
        self.forwards = {"grad": 0, "no_grad": 0}
        self._generating = False
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self._snapshot = [p.detach().clone() for p in self._trainable]
        original = model.generate  # type: ignore[operator]

        def generate(*args: Any, **kwargs: Any) -> Tensor:
            self._generating = True
            try:
                out = original(*args, **kwargs)
            finally:
                self._generating = False
            self._record_generation(kwargs["input_ids"], kwargs["attention_mask"], out)
            return out

        model.generate = generate  # type: ignore[method-assign]
        model.register_forward_pre_hook(self._on_forward, with_kwargs=True)

    def _record_generation(self, ids: Tensor, mask: Tensor, out: Tensor) -> None:
        completions = out[:, ids.shape[1] :]
        lengths = completion_lengths(out, ids.shape[1], self.eos_id)
        prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
        distinct = [p for i, p in enumerate(prompts) if i == 0 or p != prompts[i - 1]]
        if not self.info["generate"]:
            self.info["first_prompts"] = distinct
        self.info["generate"].append(
            {
                "rows": out.shape[0],
                "prompt_width": ids.shape[1],
                "completion_width": completions.shape[1],
                "mean_completion_len": float(lengths.float().mean()),
            }
        )

    def _on_forward(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if self._generating:
            return
        grad = torch.is_grad_enabled()
        self.forwards["grad" if grad else "no_grad"] += 1
        if grad and "first_forward" not in self.info:
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            half = ids.shape[0] // 2
            rows = [ids[i][mask[i].bool()].tolist() for i in (0, half)]
            self.info["first_forward"] = {"shape": list(ids.shape), "rows_0_and_half": rows}

    def after_first_step(self) -> None:
        deltas = [
            (p.detach() - q).abs().max().item()
            for p, q in zip(self._trainable, self._snapshot, strict=True)
        ]
        self.info["max_abs_param_change_step1"] = max(deltas)
        self.info["policy_forwards_step1"] = dict(self.forwards)
        self.info["threads_in_step"] = torch.get_num_threads()


class StepClock:
    """Step start/end times, plus what starts and stops at the end of warm-up (profilers)."""

    def __init__(self, steps: int, warmup: int, start: float) -> None:
        self.steps, self.warmup, self.start = steps, warmup, start
        self.begins: list[float] = []
        self.ends: list[float] = []
        self.rss_first_step = 0.0
        self.setup_peak = 0.0
        self.setup_s = 0.0
        self.sections: Sections | None = None
        self.cprofile: cProfile.Profile | None = None
        self.probe: Probe | None = None
        self.threads = 0
        self.lengths: list[float] = []  # mean completion length per generate call

    def begin(self) -> None:
        if not self.begins:
            self.rss_first_step, self.setup_s = rss_mb(), time.perf_counter() - self.start
            self.setup_peak = peak_rss_mb()
            self.threads = torch.get_num_threads()
            if self.probe is not None:  # count step 1's forwards only, not precomputing ones
                self.probe.forwards = {"grad": 0, "no_grad": 0}
        if len(self.begins) == self.warmup:
            if self.sections is not None:
                self.sections.active = True
            if self.cprofile is not None:
                self.cprofile.enable()
        self.begins.append(time.perf_counter())

    def end(self) -> None:
        self.ends.append(time.perf_counter())
        if len(self.ends) == 1 and self.probe is not None:
            self.probe.after_first_step()
        if len(self.ends) == self.steps:
            if self.sections is not None:
                self.sections.active = False
            if self.cprofile is not None:
                self.cprofile.disable()

    def result(self) -> dict[str, Any]:
        cycle = [self.ends[0] - self.begins[0]]
        cycle += [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        return {
            "in_step": [e - b for b, e in zip(self.begins, self.ends, strict=True)],
            "cycle": cycle,
            "rss_first_step_mb": self.rss_first_step,
            "setup_peak_mb": self.setup_peak,
            "setup_s": self.setup_s,
            "threads": self.threads,
            "completion_lengths": self.lengths,
        }


def trl_clock_callback(clock: StepClock) -> Any:
    from transformers import TrainerCallback

    class TRLClock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.end()

    return TRLClock()


def lightning_clock_callback(clock: StepClock) -> Any:
    from lightning.pytorch import Callback

    class LightningClock(Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            clock.begin()

        def on_train_batch_end(self, *args: Any) -> None:
            clock.end()

    return LightningClock()


def null_logger() -> Any:
    """A logger that drops everything (TaskGradNormMonitor refuses to run without a logger)."""
    from lightning.pytorch.loggers import Logger

    class NullLogger(Logger):
        name = "null"  # type: ignore[assignment]
        version = 0  # type: ignore[assignment]

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    return NullLogger()


def lightning_trainer(
    steps: int, clock: StepClock, root: str, *callbacks: Any, precision: str = "32-true"
) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="cpu",
        precision=precision,  # type: ignore[arg-type]
        devices=1,
        max_steps=steps,
        logger=null_logger(),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=GRAD_CLIP,  # TRL's default max_grad_norm
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=[lightning_clock_callback(clock), *callbacks],
    )


def trl_common_args(steps: int, root: str, lr: float) -> dict[str, Any]:
    return {
        "output_dir": root,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,  # TRL's default is True; gradbal does not checkpoint
        "gradient_accumulation_steps": 1,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": GRAD_CLIP,
        "optim": "adamw_torch",
        "max_steps": steps,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
        "seed": TRAIN_SEED,
    }


def adamw(lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)


def instrument(sections: Sections, framework: str) -> list[str]:
    """Wrap the calls that make up a GRPO step; returns the sections that could not be wrapped."""
    # AdamW.step calls the module-level function `adam` (torch.optim deletes the submodule name)
    adam_module = importlib.import_module("torch.optim.adam")
    missing = []
    wraps = [
        (torch.Tensor, "backward", "backward"),
        (adam_module, "adam", "optimizer update"),
        (torch.nn.utils, "clip_grad_norm_", "grad-norm clip"),
    ]
    if framework == "trl":
        from accelerate import Accelerator
        from trl import GRPOTrainer

        wraps += [
            # accelerate clips through get_total_norm + clip_grads_with_norm_, not clip_grad_norm_
            (Accelerator, "clip_grad_norm_", "grad-norm clip"),
            (GRPOTrainer, "_get_per_token_logps_and_entropies", "policy log-probs (forward)"),
            (GRPOTrainer, "_calculate_rewards", "reward"),
        ]
    else:
        import gradbal.modules.grpo as grpo_module

        wraps += [
            (grpo_module, "completion_logprobs", "policy log-probs (forward)"),
            (grpo_module, "score_by_task", "reward"),
        ]
    for owner, attribute, name in wraps:
        if not sections.wrap(owner, attribute, name):
            missing.append(f"{getattr(owner, '__name__', owner)}.{attribute}")
    return missing


def wrap_generate(model: nn.Module, sections: Sections) -> None:
    original = model.generate  # type: ignore[operator]

    def generate(*args: Any, **kwargs: Any) -> Any:
        with sections.section("generate"):
            return original(*args, **kwargs)

    model.generate = generate  # type: ignore[method-assign]


# ---- one run per subprocess ------------------------------------------------------------------


def probed_policy(spec: dict[str, Any], clock: StepClock, base: type | None = None) -> Any:
    """A policy class (``base``, default TinyPolicy) that lets the probes (``--check``,
    ``--profile``) and the completion-length meter see the model it builds."""
    from gradbal.models import TinyPolicy

    class Policy(base or TinyPolicy):  # type: ignore[misc]
        def build(self) -> tuple[nn.Module, Any]:
            model, tokenizer = super().build()
            if spec["check"]:
                clock.probe = Probe(model, tokenizer.eos_token_id)
            if clock.sections is not None:
                wrap_generate(model, clock.sections)
            if spec["method"] == "grpo":
                meter_lengths(model, tokenizer.eos_token_id, clock.lengths)
            return model, tokenizer

    return Policy


def recommended_settings() -> dict[str, Any]:
    """The memory settings configs/real/grpo_multitask.yaml ships (what gradbal recommends)."""
    import yaml

    config = yaml.safe_load((REPO / "configs/real/grpo_multitask.yaml").read_text())
    policy = config["model"]["init_args"]["policy"]["init_args"]
    return {
        "precision": str(config["trainer"].get("precision", "32-true")),
        "gradient_checkpointing": bool(policy.get("gradient_checkpointing", False)),
        "dtype": policy.get("dtype", "auto"),
    }


def trl_model(spec: dict[str, Any]) -> tuple[nn.Module, Any, Any]:
    """TRL's policy, tokenizer and peft config: the same weights gradbal loads."""
    from gradbal.models import TinyPolicy

    if spec["model"] == "tiny":
        model, tokenizer = TinyPolicy(**POLICY).build()
        return model, tokenizer, None
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradbal.models.gguf import convert_gguf
    from gradbal.models.shipped import shipped_model_path

    path = convert_gguf(shipped_model_path(SHIPPED))  # gradbal's cached fp32 conversion
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = GRPO["lora"]
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return model, tokenizer, peft_config


def gradbal_policy(spec: dict[str, Any], clock: StepClock) -> Any:
    from gradbal.models import LoRA, PretrainedPolicy

    if spec["model"] == "tiny":
        return probed_policy(spec, clock)(**POLICY)
    lora = GRPO["lora"]
    recommended = spec["config"] == "gradbal (recommended)"
    settings = recommended_settings() if recommended else {"dtype": "float32"}
    return probed_policy(spec, clock, PretrainedPolicy)(
        SHIPPED,
        dtype=settings["dtype"],
        gradient_checkpointing=settings.get("gradient_checkpointing", False),
        lora=LoRA(r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"]),
    )


def trl_grpo_data(
    batches: list[dict[str, Any]], tasks: list[Any], chat: bool
) -> tuple[Any, Callable[..., list[float]]]:
    """TRL's train dataset and reward function for gradbal's scheduled ``batches``.

    The dataset holds the batches' prompts in order (give TRL ``shuffle_dataset=False``), with a
    ``row_id`` column; the reward function scores each row with its task's own reward, called
    once per task on its rows, as gradbal does. ``chat``: conversational prompts, so that TRL
    applies the chat template as gradbal's ``prompt_format="auto"`` does.
    """
    from datasets import Dataset

    from gradbal.tasks import score

    rows = [
        (int(t), p, a, c)
        for b in batches
        for t, p, a, c in zip(
            b["task_id"].tolist(), b["prompt"], b["answer"], b["columns"], strict=True
        )
    ]
    prompts: list[Any] = [[{"role": "user", "content": r[1]}] if chat else r[1] for r in rows]
    dataset = Dataset.from_dict({"prompt": prompts, "row_id": list(range(len(rows)))})

    def task_reward(
        prompts: list[Any], completions: list[Any], row_id: list[int], **_: Any
    ) -> list[float]:
        """The task's own reward, called once per task on its rows (as gradbal does)."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = [0.0] * len(texts)
        for t in sorted({rows[i][0] for i in row_id}):
            idx = [j for j, i in enumerate(row_id) if rows[i][0] == t]
            values = score(
                tasks[t],
                [rows[row_id[j]][1] for j in idx],
                [texts[j] for j in idx],
                [rows[row_id[j]][3] for j in idx],
                answers=[rows[row_id[j]][2] for j in idx],
            )
            for j, v in zip(idx, values, strict=True):
                out[j] = v
        return out

    return dataset, task_reward


def trl_grpo_args(settings: dict[str, Any]) -> dict[str, Any]:
    """``GRPOConfig`` arguments for gradbal's GRPO ``settings`` (a ``GRPO_SETTINGS`` value).

    ``per_device_train_batch_size`` counts completions: prompts x generations; then
    ``generation_batch_size`` = the same and ``steps_per_generation`` = 1 follow (one generation
    per optimizer step), as gradbal's one rollout per ``training_step``.
    """
    return {
        "per_device_train_batch_size": settings["prompts"] * settings["generations"],
        "num_generations": settings["generations"],
        "max_completion_length": settings["max_new_tokens"],
        "temperature": settings["temperature"],
        "top_p": 1.0,
        "top_k": 0,
        "beta": settings["beta"],
        "num_iterations": 1,
        "epsilon": 0.2,
        "epsilon_high": 0.28,
        "loss_type": "dapo",
        "scale_rewards": settings["scale_rewards"],
        "mask_truncated_completions": False,
        "log_completions": False,
        "shuffle_dataset": False,
        "remove_unused_columns": False,
    }


def run_grpo(spec: dict[str, Any], clock: StepClock, root: str) -> None:
    steps = spec["steps"]
    framework = "trl" if spec["config"].startswith("trl") else "gradbal"
    if spec["profile"] == "sections":
        clock.sections = Sections()
        spec["uninstrumented"] = instrument(clock.sections, framework)
    chat = spec["model"] != "tiny"
    if framework == "trl":
        from trl import GRPOConfig, GRPOTrainer

        schedule_dm = grpo_datamodule(steps, spec["check"])
        batches = scheduled_batches(schedule_dm, steps)
        dataset, task_reward = trl_grpo_data(batches, schedule_dm.tasks, chat)
        model, tokenizer, peft_config = trl_model(spec)
        common = trl_common_args(steps, root, GRPO["lr"])
        if spec["config"] == "trl (defaults)":  # TRL's own: bf16 and gradient checkpointing
            del common["bf16"], common["gradient_checkpointing"]
        config = GRPOConfig(**common, **trl_grpo_args(GRPO))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=task_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[trl_clock_callback(clock)],
            peft_config=peft_config,
        )
        policy = trainer.model  # the peft-wrapped model TRL generates and trains with
        if spec["check"]:
            clock.probe = Probe(policy, tokenizer.eos_token_id)
        if clock.sections is not None:
            wrap_generate(policy, clock.sections)
        meter_lengths(policy, tokenizer.eos_token_id, clock.lengths)
        trainer.train()
        return

    import lightning.pytorch as pl

    from gradbal.callbacks import TaskGradNormMonitor
    from gradbal.modules import GRPOModule
    from gradbal.objectives import DAPOAggregation
    from gradbal.rollout import HFGenerate

    module = GRPOModule(
        gradbal_policy(spec, clock),
        optimizer=adamw(GRPO["lr"]),
        loss_aggregation=DAPOAggregation(),
        num_generations=GRPO["generations"],
        max_new_tokens=GRPO["max_new_tokens"],
        temperature=GRPO["temperature"],
        top_p=1.0,
        top_k=None,
        scale_rewards=GRPO["scale_rewards"],
        epsilon_low=0.2,
        epsilon_high=0.28,
        beta=GRPO["beta"],
        num_iterations=1,
        prompt_format="auto" if chat else "plain",
        # the ablation: each prompt encoded once per completion, as TRL does
        share_prompt_forward=spec["config"] != "gradbal (full forward)",
        rollout_engine=HFGenerate(
            sampler="inverse_cdf"
            if spec["config"] == "gradbal (inverse-CDF sampler)"
            else "multinomial"
        ),
    )
    callbacks = []
    if spec["config"] == "gradbal+monitor":
        callbacks.append(TaskGradNormMonitor(params="last_attention_block", every_n_steps=1))
    precision = "32-true"
    if spec["config"] == "gradbal (recommended)":
        precision = recommended_settings()["precision"]
    pl.seed_everything(TRAIN_SEED, verbose=False)
    dm = grpo_datamodule(steps, spec["check"])
    lightning_trainer(steps, clock, root, *callbacks, precision=precision).fit(module, dm)


def run_dpo(spec: dict[str, Any], clock: StepClock, root: str) -> None:
    from gradbal.models import TinyPolicy

    steps = spec["steps"]
    precomputed = "precomputed" in spec["config"]
    if spec["config"].startswith("trl"):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        batches = scheduled_batches(dpo_datamodule(steps), steps)
        columns = [c for b in batches for c in b["columns"]]
        dataset = Dataset.from_dict(
            {
                "prompt": [p for b in batches for p in b["prompt"]],
                "chosen": [c["chosen"] for c in columns],
                "rejected": [c["rejected"] for c in columns],
            }
        )
        model, tokenizer = TinyPolicy(**POLICY).build()
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        if spec["check"]:
            clock.probe = Probe(model, tokenizer.eos_token_id)
        config = DPOConfig(
            **trl_common_args(steps, root, DPO_SETTINGS["lr"]),
            per_device_train_batch_size=DPO_SETTINGS["pairs"],
            beta=DPO_SETTINGS["beta"],
            loss_type=["sigmoid"],
            max_length=None,
            precompute_ref_log_probs=precomputed,
            precompute_ref_batch_size=DPO_SETTINGS["pairs"],
            train_sampling_strategy="sequential",
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None if precomputed else reference,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[trl_clock_callback(clock)],
        )
        trainer.train()
        return

    import lightning.pytorch as pl

    from gradbal.modules import DPOModule
    from gradbal.objectives import DPO

    Policy = probed_policy(spec, clock)

    module = DPOModule(
        Policy(**POLICY),
        DPO(beta=DPO_SETTINGS["beta"]),
        optimizer=adamw(DPO_SETTINGS["lr"]),
        reference="precomputed" if precomputed else "model",
        reference_batch_size=DPO_SETTINGS["pairs"],
        prompt_format="plain",
    )
    pl.seed_everything(TRAIN_SEED, verbose=False)
    lightning_trainer(steps, clock, root).fit(module, dpo_datamodule(steps))


def use_model(model: str) -> None:
    """Select the GRPO settings and configurations of ``--model`` (in parent and workers)."""
    global GRPO, GRPO_CONFIGS
    GRPO, GRPO_CONFIGS = GRPO_SETTINGS[model], GRPO_CONFIGS_BY_MODEL[model]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    use_model(spec["model"])
    torch.set_num_threads(spec["threads"])
    clock = StepClock(spec["steps"], spec["warmup"], start)
    if spec["profile"] == "cprofile":
        clock.cprofile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as root:
        (run_grpo if spec["method"] == "grpo" else run_dpo)(spec, clock, root)
    if len(clock.ends) != spec["steps"]:
        raise RuntimeError(f"{spec['config']}: {len(clock.ends)} steps ran, not {spec['steps']}.")
    result = clock.result()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["check"] = clock.probe.info if clock.probe is not None else None
    if clock.sections is not None:
        result["sections"] = dict(clock.sections.totals)
        result["section_peaks"] = dict(clock.sections.peaks)
        # the sections reset the kernel's high-water mark, which ru_maxrss reads too
        result["peak_rss_mb"] = max(
            result["peak_rss_mb"], clock.setup_peak, *clock.sections.peaks.values()
        )
        result["uninstrumented"] = spec.get("uninstrumented", [])
    if clock.cprofile is not None:
        out = io.StringIO()
        stats = pstats.Stats(clock.cprofile, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(25)
        # the frameworks' own functions (full paths, so the filter can tell them apart)
        own = pstats.Stats(clock.cprofile, stream=out).sort_stats("cumulative")
        own.print_stats(r"/gradbal/|/trl/", 25)
        text = out.getvalue().replace(str(REPO) + "/", "")
        result["cprofile"] = text.replace(str(Path(torch.__file__).parents[1]) + "/", "")
    return result


# ---- parent: schedule, aggregate, print ------------------------------------------------------


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    threads = str(spec["threads"])
    env.update(
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRL_EXPERIMENTAL_SILENCE="1",
        TQDM_DISABLE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-6000:])
        raise RuntimeError(f"worker {spec['method']}/{spec['config']} failed ({proc.returncode}).")
    return json.loads(lines[-1][len("RESULT ") :])


def spec_for(method: str, config: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "model": args.model,
        "config": config,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "check": False,
        "profile": None,
        **extra,
    }


def time_method(method: str, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    configs = GRPO_CONFIGS if method == "grpo" else DPO_CONFIGS
    if method == "grpo" and args.configs:  # a subset, in the table's order
        configs = tuple(c for c in configs if c in args.configs)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for config in configs if r % 2 == 0 else configs[::-1]:
            result = launch(spec_for(method, config, args))
            runs[config].append(result)
            measured = result["cycle"][args.warmup :]
            print(
                f"[{method} {r + 1}/{args.repeats}] {config}: "
                f"{statistics.median(measured):.3f} s/step",
                file=sys.stderr,
                flush=True,
            )
    return runs


def summarise(runs: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    cycle = [t for r in runs for t in r["cycle"][warmup:]]
    in_step = [t for r in runs for t in r["in_step"][warmup:]]
    run_medians = [statistics.median(r["cycle"][warmup:]) for r in runs]
    return {
        "median_s_per_step": statistics.median(cycle),
        "median_in_hook_s": statistics.median(in_step),
        "run_median_min": min(run_medians),
        "run_median_max": max(run_medians),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "rss_first_step_mb": statistics.median(r["rss_first_step_mb"] for r in runs),
        "setup_s": statistics.median(r["setup_s"] for r in runs),
        "threads": sorted({r["threads"] for r in runs}),
        "steps_timed": len(cycle),
        "mean_completion_len": statistics.fmean(
            x for r in runs for x in r.get("completion_lengths", [])[warmup:]
        )
        if any(r.get("completion_lengths") for r in runs)
        else float("nan"),
    }


def baseline_of(method: str, config: str) -> str:
    if method == "dpo" and "precomputed" in config:
        return "trl (precomputed ref)"
    if config in ("trl (defaults)", "gradbal (recommended)"):
        return "trl (defaults)"
    return "trl"


def print_table(method: str, summary: dict[str, dict[str, Any]]) -> None:
    unit, per_step = (
        ("completions/s", GRPO["prompts"] * GRPO["generations"])
        if method == "grpo"
        else ("pairs/s", DPO_SETTINGS["pairs"])
    )
    print(
        f"| framework | median s/step | {unit} | peak RSS MB | ratio vs TRL | in-hook s/step "
        "| run medians min-max s | RSS at step 1 MB | setup s | steps timed "
        "| mean completion tokens |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config, s in summary.items():
        base = summary.get(baseline_of(method, config))  # absent when --configs left it out
        ratio = s["median_s_per_step"] / base["median_s_per_step"] if base else float("nan")
        s["ratio_vs_trl"] = ratio
        print(
            f"| {config} | {s['median_s_per_step']:.3f} | {per_step / s['median_s_per_step']:.1f} "
            f"| {s['peak_rss_mb']:.0f} | {ratio:.2f} | {s['median_in_hook_s']:.3f} "
            f"| {s['run_median_min']:.3f}-{s['run_median_max']:.3f} "
            f"| {s['rss_first_step_mb']:.0f} | {s['setup_s']:.1f} | {s['steps_timed']} "
            f"| {s['mean_completion_len']:.1f} |"
        )


def check_method(method: str, args: argparse.Namespace) -> bool:
    """One untimed run per configuration with probes; print what each saw, return if they agree."""
    from gradbal.models import byte_level_tokenizer

    configs = GRPO_CONFIGS if method == "grpo" else DPO_CONFIGS
    infos = {c: launch(spec_for(method, c, args, check=True))["check"] for c in configs}
    grpo = method == "grpo"
    # GRPO: the distinct prompts generate() got; DPO: the first chosen and rejected row trained on
    inputs = {
        c: json.dumps(i["first_prompts"] if grpo else i["first_forward"]["rows_0_and_half"])
        for c, i in infos.items()
    }
    print(f"\n## Equivalence check ({method}, untimed runs)\n")
    if grpo:
        print(
            "Rewards get a 0.001 x completion-length bonus in these runs, in both frameworks, so "
            "that the random policy's groups have a spread and step 1 moves the parameters.\n"
        )
    header = ["config", "initial weights sha", "step-1 inputs = TRL's"]
    if grpo:
        header += ["generate rows x (prompt + max completion width)", "mean completion len"]
    header += ["first grad forward shape", "policy forwards in step 1 (grad/no grad)"]
    header += ["max abs param change after step 1", "threads"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for config, info in infos.items():
        cells = [config, info["weights_sha"], str(inputs[config] == inputs["trl"])]
        if grpo:
            gens = info["generate"]
            width = max(g["completion_width"] for g in gens)
            cells.append(f"{gens[0]['rows']} x ({gens[0]['prompt_width']} + {width})")
            cells.append(f"{statistics.fmean(g['mean_completion_len'] for g in gens):.1f}")
        forwards = info["policy_forwards_step1"]
        cells += [str(info["first_forward"]["shape"]), f"{forwards['grad']}/{forwards['no_grad']}"]
        cells += [f"{info['max_abs_param_change_step1']:.2e}", str(info["threads_in_step"])]
        print("| " + " | ".join(cells) + " |")
    ok = len({i["weights_sha"] for i in infos.values()}) == 1
    ok &= len(set(inputs.values())) == 1
    ok &= all(i["max_abs_param_change_step1"] > 0 for i in infos.values())
    ok &= all(i["threads_in_step"] == args.threads for i in infos.values())
    if args.model == "tiny":
        tok = byte_level_tokenizer()
    else:
        from transformers import AutoTokenizer

        from gradbal.models.gguf import convert_gguf
        from gradbal.models.shipped import shipped_model_path

        tok = AutoTokenizer.from_pretrained(convert_gguf(shipped_model_path(SHIPPED)))
    first = json.loads(inputs["trl"])
    if grpo:
        gens = [g for i in infos.values() for g in i["generate"]]
        ok &= all(g["rows"] == GRPO["prompts"] * GRPO["generations"] for g in gens)
        ok &= all(g["completion_width"] <= GRPO["max_new_tokens"] for g in gens)
        print("\nstep 1's prompts: " + ", ".join(repr(tok.decode(p)) for p in first))
    else:
        print(
            "\nstep 1's first pair (chosen, rejected): "
            + ", ".join(repr(tok.decode(r)) for r in first)
        )
    print(f"\ncheck: {'OK' if ok else 'MISMATCH'} (same weights, same inputs, parameters moved)")
    return ok


def print_profile(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = [
        "generate",
        "reward",
        "policy log-probs (forward)",
        "backward",
        "grad-norm clip",
        "optimizer update",
    ]
    n = args.steps - args.warmup
    table: dict[str, dict[str, float]] = {}
    for config, r in results.items():
        in_step = sum(r["in_step"][args.warmup :])
        between = sum(r["cycle"][args.warmup :]) - in_step
        sections = {k: r["sections"].get(k, 0.0) for k in names}
        sections["other in-step (framework, loss math, metrics, tokenize/decode)"] = in_step - sum(
            sections.values()
        )
        sections["between steps (data, logging, hooks)"] = between
        table[config] = {k: v / n for k, v in sections.items()}
        if r["uninstrumented"]:
            print(f"note: {config}: could not wrap {r['uninstrumented']}", file=sys.stderr)
    configs = list(table)
    print("\n## Where a GRPO step's time goes (exclusive wall time, s/step)\n")
    print(f"{n} steps after {args.warmup} warm-up, {args.threads} threads, one run each.\n")
    print("| section | " + " | ".join(f"{c} s | {c} %" for c in configs) + " |")
    print("| --- |" + " ---: | ---: |" * len(configs))
    rows = list(next(iter(table.values())))
    for row in [*rows, "total"]:
        cells = []
        for c in configs:
            total = sum(table[c].values())
            v = total if row == "total" else table[c][row]
            cells.append(f"{v:.4f} | {100 * v / total:.0f}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("\n## Peak RSS inside each section (MB; a section's peak includes nested ones)\n")
    print("| section | " + " | ".join(configs) + " |")
    print("| --- |" + " ---: |" * len(configs))
    peak_rows = ["before step 1 (load, setup)", *names, OUTSIDE, "whole run"]
    for row in peak_rows:
        cells = []
        for c in configs:
            r = results[c]
            value = {
                "before step 1 (load, setup)": r["setup_peak_mb"],
                "whole run": r["peak_rss_mb"],
            }.get(row, r["section_peaks"].get(row, float("nan")))
            cells.append(f"{value:.0f}")
        print(f"| {row} | " + " | ".join(cells) + " |")


def print_goals(summary: dict[str, dict[str, Any]], model: str) -> None:
    """The goals' verdicts (tiny: monitor within 1.07x TRL; SmolLM2: issue 13's goals), for the
    configurations that ran (``--configs``)."""

    def verdict(value: float, goal: float) -> str:
        return f"{value:.2f} (goal <= {goal}: {'met' if value <= goal else 'NOT met'})"

    if model == "tiny":
        if "gradbal+monitor" in summary:
            monitor = summary["gradbal+monitor"]["ratio_vs_trl"]
            print(f"\ngradbal + TaskGradNormMonitor(every step) / TRL = {verdict(monitor, 1.07)}")
        return
    lines = []
    trl = summary.get("trl")
    ours = summary.get("gradbal")
    if trl is not None and ours is not None:
        memory = ours["peak_rss_mb"] / trl["peak_rss_mb"]
        lines.append(
            f"matched (fp32, no checkpointing): step time gradbal / TRL = "
            f"{verdict(ours['ratio_vs_trl'], 0.9)}; peak RSS gradbal / TRL = {verdict(memory, 1.0)}"
        )
    sampler = summary.get("gradbal (inverse-CDF sampler)")
    if trl is not None and sampler is not None:
        line = f"matched, inverse-CDF sampler: step time / TRL = {verdict(sampler['ratio_vs_trl'], 0.9)}"
        if ours is not None:
            line += f", / gradbal = {sampler['median_s_per_step'] / ours['median_s_per_step']:.2f}"
        lines.append(line)
    monitor = summary.get("gradbal+monitor")
    if monitor is not None and ours is not None:
        lines.append(
            f"monitor every step (last attention block): gradbal+monitor / TRL = "
            f"{monitor['ratio_vs_trl']:.2f}, "
            f"/ gradbal = {monitor['median_s_per_step'] / ours['median_s_per_step']:.2f}"
        )
    if "gradbal (recommended)" in summary and "trl (defaults)" in summary:
        defaults = summary["gradbal (recommended)"]["peak_rss_mb"]
        defaults /= summary["trl (defaults)"]["peak_rss_mb"]
        lines.append(
            f"defaults: peak RSS gradbal (recommended: {recommended_settings()}) / TRL (defaults) "
            f"= {verdict(defaults, 1.0)}"
        )
    if lines:
        print("\n" + "\n".join(lines))


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import accelerate
    import lightning
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "lightning": lightning.__version__,
        "accelerate": accelerate.__version__,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=("grpo", "dpo", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="first, one untimed run per configuration printing what each saw in step 1",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: break one GRPO run per framework into sections, and cProfile it",
    )
    parser.add_argument(
        "--model",
        choices=tuple(GRPO_SETTINGS),
        default="tiny",
        help="tiny: the byte-level toy (GRPO and DPO); smollm2: the shipped SmolLM2-135M-Instruct "
        "with LoRA (GRPO only), matched and at each framework's defaults",
    )
    parser.add_argument(
        "--configs",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="a comma-separated subset of the GRPO configurations to run (default: all); "
        "the ratios need their TRL baseline in the subset",
    )
    parser.add_argument(
        "--no-cprofile",
        dest="cprofile",
        action="store_false",
        help="--profile only: the sections table without the cProfile runs",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_model(args.model)
    unknown = sorted(set(args.configs or ()) - set(GRPO_CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; the configurations are {GRPO_CONFIGS}.")
    if args.model != "tiny" and args.which != "grpo":
        parser.error(f"--model {args.model} benchmarks GRPO only: pass --which grpo.")
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup must be in [0, --steps); got {args.warmup} and {args.steps}.")
    env = environment(args)
    print(
        f"torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, "
        f"lightning {env['lightning']}, accelerate {env['accelerate']}; "
        f"{args.threads} threads per run (torch.set_num_threads + OMP_NUM_THREADS), "
        f"{env['cpu_count']} CPUs, load average {env['load_average'][0]:.2f}"
    )
    output: dict[str, Any] = {
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if args.profile:
        configs = args.configs or GRPO_CONFIGS
        sections = {c: launch(spec_for("grpo", c, args, profile="sections")) for c in configs}
        print_profile(sections, args)
        profiled = [c for c in GRPO_CONFIGS[:2] if c in configs] if args.cprofile else []
        profiles = {c: launch(spec_for("grpo", c, args, profile="cprofile")) for c in profiled}
        for config, r in profiles.items():
            print(
                f"\n### cProfile, {config} (measured steps only)\n\n```\n{r['cprofile'].strip()}\n```"
            )
        output["profile"] = {
            "sections": {c: r["sections"] for c, r in sections.items()},
            "cprofile": {c: r["cprofile"] for c, r in profiles.items()},
        }
    else:
        methods = ("grpo", "dpo") if args.which == "all" else (args.which,)
        ok = True
        for method in methods:
            if args.check:
                ok &= check_method(method, args)
            runs = time_method(method, args)
            summary = {c: summarise(r, args.warmup) for c, r in runs.items()}
            title = (
                f"GRPO on {args.model} ({GRPO['prompts']} prompts x {GRPO['generations']} "
                f"completions, <= {GRPO['max_new_tokens']} new tokens)"
                if method == "grpo"
                else ("DPO (32 pairs per step)")
            )
            print(
                f"\n## {title}: median of {args.repeats} runs x {args.steps - args.warmup} steps\n"
            )
            print_table(method, summary)
            if method == "grpo":
                print_goals(summary, args.model)
            print("\nSettings the two cannot match exactly:\n")
            unmatched = UNMATCHED_GRPO if args.model == "tiny" else UNMATCHED_GRPO_REAL
            for item in unmatched if method == "grpo" else UNMATCHED_DPO:
                print(f"- {item}")
            output[method] = {"summary": summary, "runs": runs}
        if not ok:
            raise SystemExit("equivalence check failed: see the tables above")
    if args.json:
        args.json.write_text(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
