"""GRPO step time with VLLMEngine vs HFGenerate: generation share and weight-sync time (CPU).

Both engines run the same config (``configs/real/grpo_vllm.yaml``: SmolLM2-135M-Instruct,
LoRA r16, 8 prompts x 4 completions, 16 new tokens, T 0.7); the HF run replaces only
``rollout_engine`` (``HFGenerate``; ``importance_sampling: auto`` is then off). ``--model tiny``
swaps in a tiny Llama (hidden 128, 2 heads: vLLM's CPU attention needs head dim >= 64) for a
smoke run. Every run is its own subprocess (its own peak RSS, a fresh vLLM), runs alternate
between engines and reverse order every repeat. Per optimizer step: "s/step" is the median
interval between consecutive step ends after ``--warmup`` steps; "generate" and "sync" are the
time inside the engine's ``generate`` and ``sync_weights`` per timed step, and their share of
the step; "completion tokens" is the mean completion length (up to and including eos) of the
timed steps' batches, since the engines sample different tokens and so do different work.
``--fixed-length`` makes the work the same: both engines get ``min_new_tokens = max_new_tokens``
(HF ``min_new_tokens``, vLLM ``min_tokens``: eos is masked until then), so every completion has
the full length and the step times compare like for like (the rewards then mean little).
Markdown on stdout; ``--json FILE`` keeps the raw numbers. Time only on an idle
machine (``uptime`` load below 1), with the same ``--threads`` for both.

``--engines ...,trl-vllm`` adds TRL's ``GRPOTrainer`` with vLLM colocated
(``use_vllm=True, vllm_mode="colocate"``) at the config's settings: the config's datamodule's
prompts in the same order, the tasks' rewards, and the GRPO settings matched as
``benchmarks/vs_trl.py`` matches them (its helpers); "generate" and "sync" are then the time in
``trainer.vllm_generation.generate`` / ``.sync_weights``, and "first step" includes vLLM's
start in ``GRPOTrainer()``. On vLLM's CPU build TRL stops at its first weight sync; the row
then reads ``failed: <error> (<TRL line>)`` and the script exits 1 after the table
(docs/rollout.md, "Compared with TRL's vLLM colocate mode"). ``--trl-patch-sync`` swaps that
sync for vLLM's ``reload_weights`` to show nothing else fails; those runs are not timed.

Run it in the vLLM environment (it has both engines; TRL is one extra package there)::

    make setup-vllm
    .venv-vllm/bin/pip install --no-deps trl==1.16.0      # only for trl-vllm
    export LD_PRELOAD="$(.venv-vllm/bin/python -m gradbal.rollout.vllm_env --preload)"
    .venv-vllm/bin/python benchmarks/rollout_engines.py --repeats 3 --steps 8 --warmup 2
    .venv-vllm/bin/python benchmarks/rollout_engines.py --max-new-tokens 128 --fixed-length \
        --repeats 2 --steps 4 --warmup 1
    .venv-vllm/bin/python benchmarks/rollout_engines.py --model tiny --repeats 1 --steps 3 \
        --warmup 1
    .venv-vllm/bin/python benchmarks/rollout_engines.py --model tiny --engines trl-vllm \
        --repeats 1 --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "real" / "grpo_vllm.yaml"
TINY_POLICY = json.dumps(
    {
        "class_path": "gradbal.models.TinyPolicy",
        "init_args": {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1},
    }
)
HF_ENGINE = json.dumps({"class_path": "gradbal.rollout.HFGenerate"})
ENGINES = ("hf", "vllm", "trl-vllm")
# trl-vllm's process: the single-process torch.distributed variables TRL's docs give for colocate
# mode on one device (MASTER_PORT: a free port, added at launch); the in-process vLLM engine; and
# the CPU build's KV cache in GiB (an integer: 1 GiB, where the config gives VLLMEngine 512 MiB),
# because TRL passes no KV-cache size of its own (vLLM's CPU default is 4 GiB).
TRL_ENV = {
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "1",
    "MASTER_ADDR": "localhost",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


def gradbal_cli(
    engine: str, model: str, steps: int, root: str, max_new_tokens: int | None = None
) -> Any:
    """The config's model, datamodule and trainer, not fitted (``engine`` "hf" swaps the engine;
    ``max_new_tokens`` overrides the config's completion length)."""
    from gradbal.cli import cli

    args = [
        "--config",
        str(CONFIG),
        f"--trainer.max_steps={steps}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
    ]
    if engine == "hf":
        args.append(f"--model.init_args.rollout_engine={HF_ENGINE}")
    if model == "tiny":
        args.append(f"--model.init_args.policy={TINY_POLICY}")
    if max_new_tokens is not None:
        args.append(f"--model.init_args.max_new_tokens={max_new_tokens}")
    return cli(args, run=False)


def time_calls(owner: Any, name: str, per_step: list[float], step: Callable[[], int]) -> None:
    """Add the wall time of every ``owner.name(...)`` call to ``per_step[step()]``."""
    inner = getattr(owner, name)

    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            per_step[min(step(), len(per_step) - 1)] += time.perf_counter() - start

    setattr(owner, name, timed)


def force_full_length(owner: Any) -> None:
    """Make every ``owner.generate(...)`` write ``max_new_tokens`` tokens (eos masked before)."""
    from dataclasses import replace

    inner = owner.generate

    def full(*a: Any, **k: Any) -> Any:
        sampling = k["sampling"]
        k["sampling"] = replace(sampling, min_new_tokens=sampling.max_new_tokens)
        return inner(*a, **k)

    owner.generate = full


def record_lengths(owner: Any, eos_of: Callable[[], int | None], lengths: list[float]) -> None:
    """Append the mean completion length (tokens up to and including the first eos, whose id
    ``eos_of()`` gives) of every ``owner.generate(...)`` batch to ``lengths``."""
    inner = owner.generate

    def recorded(*a: Any, **k: Any) -> Any:
        from gradbal.modules._sequences import completion_mask

        out = inner(*a, **k)
        mask, _ = completion_mask(out.completion_ids, eos_of())
        lengths.append(float(mask.sum(1).float().mean()))
        return out

    owner.generate = recorded


def summarise(
    engine: str,
    start: float,
    ends: list[float],
    timers: dict[str, list[float]],
    warmup: int,
    lengths: list[float] | None = None,
) -> dict[str, Any]:
    """One run's numbers from its step-end times, per-step generate/sync times and (if given)
    the mean completion length of each step's batch."""
    intervals = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)][warmup:]
    timed_gen, timed_sync = timers["generate"][warmup:], timers["sync"][warmup:]
    timed_lengths = (lengths or [])[warmup:]
    return {
        "completion_tokens": statistics.fmean(timed_lengths) if timed_lengths else float("nan"),
        "engine": engine,
        "step_s": statistics.median(intervals),
        "generate_s": statistics.median(timed_gen),
        "sync_s": statistics.median(timed_sync),
        "generate_share": sum(timed_gen) / sum(intervals),
        "sync_share": sum(timed_sync) / sum(intervals),
        "first_step_s": ends[0] - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def one_run(
    engine: str,
    model: str,
    steps: int,
    warmup: int,
    threads: int,
    max_new_tokens: int | None = None,
    fixed_length: bool = False,
) -> dict[str, Any]:
    """Fit ``steps`` optimizer steps in this process and time them (called in a subprocess)."""
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(threads)
    root = tempfile.mkdtemp(prefix="gradbal-bench-")
    run = gradbal_cli(engine, model, steps, root, max_new_tokens)
    module = run.model
    engine_obj = module.rollout_engine
    timers = {"generate": [0.0] * steps, "sync": [0.0] * steps}
    if fixed_length:
        force_full_length(engine_obj)
    time_calls(engine_obj, "generate", timers["generate"], lambda: module.global_step)
    time_calls(engine_obj, "sync_weights", timers["sync"], lambda: module.global_step)
    lengths: list[float] = []  # one batch per optimizer step in this config
    record_lengths(engine_obj, lambda: module.tokenizer.eos_token_id, lengths)
    ends: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *a: Any) -> None:
            ends.append(time.perf_counter())

    run.trainer.callbacks.append(Clock())
    start = time.perf_counter()
    run.trainer.fit(module, run.datamodule)
    return summarise(engine, start, ends, timers, warmup, lengths)


def trl_policy(model: str, folder: Path) -> tuple[Any, Any, Any]:
    """TRL's policy, tokenizer and peft config: the weights the gradbal runs start from.

    TRL's colocate mode starts vLLM from ``model.name_or_path``, so the tiny policy (built in
    memory, seed 0, as gradbal builds it) is saved to ``folder`` and loaded back from there.
    """
    import torch
    import vs_trl  # benchmarks/vs_trl.py (this script's folder is on sys.path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradbal.models import TinyPolicy

    if model == "smollm2":
        vs_trl.use_model("smollm2")  # its LoRA: r 16, alpha 32, dropout 0, all linear layers
        return vs_trl.trl_model({"model": "smollm2"})
    policy, tokenizer = TinyPolicy(**json.loads(TINY_POLICY)["init_args"]).build()
    policy.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return policy, AutoTokenizer.from_pretrained(folder), None


def trl_run(
    model: str, steps: int, warmup: int, threads: int, patch_sync: bool, model_impl: str
) -> dict[str, Any]:
    """TRL ``GRPOTrainer`` with vLLM colocated, at the config's settings (in a subprocess).

    Same prompts in the same order (the config's datamodule's batches), same task rewards,
    same GRPO settings, read from the config (matched as benchmarks/vs_trl.py matches them).
    TRL's sampling and weight sync are timed by wrapping ``trainer.vllm_generation``'s public
    ``generate`` and ``sync_weights``. ``patch_sync`` replaces TRL's colocate sync (a private
    ``load_weights`` call that the CPU build of vLLM cannot take) by vLLM's ``reload_weights``,
    as ``VLLMEngine`` syncs: a check that nothing else stops TRL here, never timed.
    ``model_impl``: TRL's ``vllm_model_impl`` (vLLM's own model code, or its Transformers backend).
    """
    import torch
    import vs_trl
    import yaml
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    root = tempfile.mkdtemp(prefix="gradbal-bench-trl-")
    config = yaml.safe_load(CONFIG.read_text())
    gr, engine_args = config["model"]["init_args"], config["model"]["init_args"]["rollout_engine"]
    settings = {
        "prompts": config["data"]["init_args"]["batch_size"],
        "generations": gr["num_generations"],
        "max_new_tokens": gr["max_new_tokens"],
        "temperature": gr["temperature"],
        "beta": gr["beta"],
        "scale_rewards": gr["scale_rewards"],
    }
    if (gr["epsilon_low"], gr["epsilon_high"], gr["importance_sampling"]) != (0.2, 0.28, "auto"):
        raise SystemExit(f"{CONFIG.name} changed: match its GRPO settings in trl_run first.")
    datamodule = gradbal_cli("hf", model, steps, root).datamodule  # the same seeded sampler
    batches = vs_trl.scheduled_batches(datamodule, steps)
    policy, tokenizer, peft_config = trl_policy(model, Path(root) / "policy")
    dataset, reward = vs_trl.trl_grpo_data(batches, datamodule.tasks, bool(tokenizer.chat_template))
    common = vs_trl.trl_common_args(steps, root, gr["optimizer"]["init_args"]["lr"])
    common["max_grad_norm"] = 0.0  # the config does not clip gradients (0: HF Trainer does not)
    common["seed"] = config["seed_everything"]
    positions = policy.config.max_position_embeddings
    args = GRPOConfig(
        **common,
        **vs_trl.trl_grpo_args(settings),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_model_impl=model_impl,
        vllm_max_model_length=min(engine_args["init_args"]["max_model_len"], positions),
        # TIS: TRL's default, which the config's importance_sampling: auto also applies
        vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode="sequence_mask",
        vllm_importance_sampling_clip_max=3.0,
    )
    if patch_sync:
        from trl.generation.vllm_generation import VLLMGeneration

        def reload_sync(self: Any) -> None:
            weights = self._iter_named_params()
            kwargs = {"weights_iterator": weights, "is_checkpoint_format": True}
            self.llm.collective_rpc("reload_weights", kwargs=kwargs)
            self.llm.reset_prefix_cache()

        VLLMGeneration.sync_weights = reload_sync  # type: ignore[method-assign]
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

    start = time.perf_counter()  # TRL starts vLLM in GRPOTrainer(): count it, as for gradbal
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Clock()],
        peft_config=peft_config,
    )
    timers = {"generate": [0.0] * steps, "sync": [0.0] * steps}
    gen = trainer.vllm_generation
    time_calls(gen, "generate", timers["generate"], lambda: trainer.state.global_step)
    time_calls(gen, "sync_weights", timers["sync"], lambda: trainer.state.global_step)
    trainer.train()
    if len(ends) != steps:
        raise RuntimeError(f"trl-vllm: {len(ends)} optimizer steps ran, not {steps}.")
    result = summarise("trl-vllm", start, ends, timers, warmup)
    return {"engine": "trl-vllm", "patched_steps": steps} if patch_sync else result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def failure_reason(stderr: str) -> str:
    """A failed run's exception line, and the last frame in TRL's code that led to it."""
    lines = [x.removeprefix("[rank0]: ").strip() for x in stderr.splitlines() if x.strip()]
    errors = [x for x in lines if re.match(r"^[\w.]+(Error|Exception)\b.*", x)]
    frames = [x for x in lines if x.startswith("File ") and "/trl/" in x]
    where = ""
    if frames:
        path, line, function = re.findall(r'File "(.*)", line (\d+), in (\S+)', frames[-1])[0]
        where = f" (trl/{path.split('/trl/', 1)[1]}:{line}, {function})"
    return (errors[-1] if errors else lines[-1] if lines else "no output") + where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument(
        "--engines",
        default="hf,vllm",
        help=f"comma-separated, from {','.join(ENGINES)} (trl-vllm: TRL, vLLM colocated)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="override the config's max_new_tokens (hf and vllm only): longer completions make "
        "generation a larger share of the step",
    )
    parser.add_argument(
        "--fixed-length",
        action="store_true",
        help="hf and vllm: every completion runs to max_new_tokens (eos masked until then), so "
        "both engines do the same work",
    )
    parser.add_argument(
        "--trl-patch-sync",
        action="store_true",
        help="trl-vllm: replace TRL's colocate weight sync by vLLM's reload_weights, to check "
        "that nothing else fails on CPU; such runs are not timed (TRL's code is changed)",
    )
    parser.add_argument(
        "--trl-model-impl",
        choices=["vllm", "transformers"],
        default="vllm",
        help="trl-vllm: GRPOConfig.vllm_model_impl (TRL's default: vllm)",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    engines = args.engines.split(",")
    if (args.max_new_tokens is not None or args.fixed_length) and "trl-vllm" in engines:
        parser.error("--max-new-tokens and --fixed-length apply to the hf and vllm engines only")
    if not set(engines) <= set(ENGINES):
        parser.error(f"--engines: unknown {sorted(set(engines) - set(ENGINES))}; use {ENGINES}")
    if args.one == "trl-vllm":
        result = trl_run(
            args.model,
            args.steps,
            args.warmup,
            args.threads,
            args.trl_patch_sync,
            args.trl_model_impl,
        )
        print("RESULT " + json.dumps(result))
        return
    if args.one is not None:
        result = one_run(
            args.one,
            args.model,
            args.steps,
            args.warmup,
            args.threads,
            args.max_new_tokens,
            args.fixed_length,
        )
        print("RESULT " + json.dumps(result))
        return
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    runs: list[dict[str, Any]] = []
    failed: dict[str, str] = {}  # trl-vllm only: its failure is a finding, not a crash
    for repeat in range(args.repeats):
        for engine in engines if repeat % 2 == 0 else engines[::-1]:
            if engine in failed:
                continue
            command = [sys.executable, __file__, "--one", engine, "--model", args.model]
            command += [f"--steps={args.steps}", f"--warmup={args.warmup}"]
            command += [f"--threads={args.threads}"]
            if args.max_new_tokens is not None:
                command += [f"--max-new-tokens={args.max_new_tokens}"]
            command += ["--fixed-length"] if args.fixed_length else []
            command += [f"--trl-model-impl={args.trl_model_impl}"]
            command += ["--trl-patch-sync"] if args.trl_patch_sync else []
            run_env = env
            if engine == "trl-vllm":
                run_env = {**env, **TRL_ENV, "MASTER_PORT": str(free_port())}
            done = subprocess.run(command, env=run_env, capture_output=True, text=True, check=False)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
                if engine == "trl-vllm":
                    failed[engine] = failure_reason(done.stderr)
                    continue
                raise SystemExit(f"run {engine} (repeat {repeat}) failed: {done.returncode}")
            runs.append(json.loads(line.removeprefix("RESULT ")))
    tokens = "" if args.max_new_tokens is None else f", max_new_tokens {args.max_new_tokens}"
    tokens += ", fixed length (min_new_tokens = max_new_tokens)" if args.fixed_length else ""
    print(
        f"model {args.model}, {args.steps} steps ({args.warmup} warm-up), {args.threads} "
        f"threads{tokens}"
    )
    print(
        "| engine | s/step | generate s/step | generate share | sync s/step | sync share "
        "| first step s | peak RSS MB | completion tokens | runs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for engine in engines:
        mine = [r for r in runs if r["engine"] == engine]
        if engine in failed:
            print(f"| {engine} | failed: {failed[engine]} ||||||||| 0 |")
            continue
        if "patched_steps" in mine[0]:
            steps = mine[0]["patched_steps"]
            print(
                f"| {engine}, sync patched | ran {steps} steps; not timed ||||||||| {len(mine)} |"
            )
            continue
        med = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "engine"}
        print(
            f"| {engine} | {med['step_s']:.3f} | {med['generate_s']:.3f} | "
            f"{med['generate_share']:.0%} | {med['sync_s']:.3f} | {med['sync_share']:.1%} | "
            f"{med['first_step_s']:.1f} | {med['peak_rss_mb']:.0f} | "
            f"{med.get('completion_tokens', float('nan')):.1f} | {len(mine)} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "failed": failed}, indent=2))
    if failed:
        section = "docs/rollout.md, 'Compared with TRL's vLLM colocate mode'"
        raise SystemExit(f"failed: {', '.join(failed)} (see {section})")


if __name__ == "__main__":
    main()
