"""GRPO step time with VLLMEngine vs HFGenerate: generation share and weight-sync time (CPU).

Both engines run the same config (``configs/real/grpo_vllm.yaml``: SmolLM2-135M-Instruct,
LoRA r16, 8 prompts x 4 completions, 16 new tokens, T 0.7); the HF run replaces only
``rollout_engine`` (``HFGenerate``; ``importance_sampling: auto`` is then off). ``--model tiny``
swaps in a tiny Llama (hidden 128, 2 heads: vLLM's CPU attention needs head dim >= 64) for a
smoke run. Every run is its own subprocess (its own peak RSS, a fresh vLLM), runs alternate
between engines and reverse order every repeat. Per optimizer step: "s/step" is the median
interval between consecutive step ends after ``--warmup`` steps; "generate" and "sync" are the
time inside the engine's ``generate`` and ``sync_weights`` per timed step, and their share of
the step. Markdown on stdout; ``--json FILE`` keeps the raw numbers. Time only on an idle
machine (``uptime`` load below 1), with the same ``--threads`` for both.

Run it in the vLLM environment (it has both engines)::

    make setup-vllm
    export LD_PRELOAD="$(.venv-vllm/bin/python -m gradbal.rollout.vllm_env --preload)"
    .venv-vllm/bin/python benchmarks/rollout_engines.py --repeats 3 --steps 8 --warmup 2
    .venv-vllm/bin/python benchmarks/rollout_engines.py --model tiny --repeats 1 --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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


def one_run(engine: str, model: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Fit ``steps`` optimizer steps in this process and time them (called in a subprocess)."""
    import lightning.pytorch as pl
    import torch

    from gradbal.cli import cli

    torch.set_num_threads(threads)
    root = tempfile.mkdtemp(prefix="gradbal-bench-")
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
    run = cli(args, run=False)
    module = run.model
    engine_obj = module.rollout_engine
    timers = {"generate": [0.0] * steps, "sync": [0.0] * steps}

    def wrap(name: str, key: str) -> None:
        inner = getattr(engine_obj, name)

        def timed(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                timers[key][min(module.global_step, steps - 1)] += time.perf_counter() - start

        setattr(engine_obj, name, timed)

    wrap("generate", "generate")
    wrap("sync_weights", "sync")
    ends: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *a: Any) -> None:
            ends.append(time.perf_counter())

    run.trainer.callbacks.append(Clock())
    start = time.perf_counter()
    run.trainer.fit(module, run.datamodule)
    intervals = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)][warmup:]
    timed_gen, timed_sync = timers["generate"][warmup:], timers["sync"][warmup:]
    step = statistics.median(intervals)
    return {
        "engine": engine,
        "step_s": step,
        "generate_s": statistics.median(timed_gen),
        "sync_s": statistics.median(timed_sync),
        "generate_share": sum(timed_gen) / sum(intervals),
        "sync_share": sum(timed_sync) / sum(intervals),
        "first_step_s": ends[0] - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    if args.one is not None:
        result = one_run(args.one, args.model, args.steps, args.warmup, args.threads)
        print("RESULT " + json.dumps(result))
        return
    engines = args.engines.split(",")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for engine in engines if repeat % 2 == 0 else engines[::-1]:
            command = [sys.executable, __file__, "--one", engine, "--model", args.model]
            command += [f"--steps={args.steps}", f"--warmup={args.warmup}"]
            command += [f"--threads={args.threads}"]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
                raise SystemExit(f"run {engine} (repeat {repeat}) failed: {done.returncode}")
            runs.append(json.loads(line.removeprefix("RESULT ")))
    print(f"model {args.model}, {args.steps} steps ({args.warmup} warm-up), {args.threads} threads")
    print(
        "| engine | s/step | generate s/step | generate share | sync s/step | sync share "
        "| first step s | peak RSS MB | runs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for engine in engines:
        mine = [r for r in runs if r["engine"] == engine]
        med = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "engine"}
        print(
            f"| {engine} | {med['step_s']:.3f} | {med['generate_s']:.3f} | "
            f"{med['generate_share']:.0%} | {med['sync_s']:.3f} | {med['sync_share']:.1%} | "
            f"{med['first_step_s']:.1f} | {med['peak_rss_mb']:.0f} | {len(mine)} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
