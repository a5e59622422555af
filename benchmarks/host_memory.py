"""Resident memory of a CPU GRPO run on SmolLM2, step by step, with and without the heap trim.

gradbal's policy modules call :func:`gradbal.modules._host_memory.release_host_memory` (glibc
``malloc_trim``) after every training batch on the CPU. This script shows why: it runs
``GRPOModule`` on the shipped SmolLM2-135M-Instruct with LoRA r16 on every linear layer (fp32, no
gradient checkpointing, 4 prompts x 4 completions of up to 48 tokens, the four chat tasks, the
same settings as ``benchmarks/vs_trl.py --model smollm2``), once as shipped and once with the
trim replaced by a no-op, each in a fresh subprocess, and prints the RSS at the start of every
step and at the end of the run, and the peak.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/host_memory.py --steps 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return (
        next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS")) / 1024
    )


def worker(trim: bool, steps: int, threads: int) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch

    import gradbal.modules.grpo as grpo_module
    from gradbal.datamodules import MultiTaskDataModule
    from gradbal.models import LoRA, PretrainedPolicy
    from gradbal.modules import GRPOModule
    from gradbal.tasks import ChatAddition, ChatComparison, ChatMultiplication, ChatWordProblem

    torch.set_num_threads(threads)
    if not trim:
        grpo_module.release_host_memory = lambda device: False  # type: ignore[assignment]
    starts: list[float] = []

    class Meter(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            starts.append(rss_mb())

    pl.seed_everything(0)
    module = GRPOModule(
        PretrainedPolicy(
            "smollm2-135m-instruct", dtype="float32", lora=LoRA(r=16, alpha=32, dropout=0.0)
        ),
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0),
        num_generations=4,
        max_new_tokens=48,
        temperature=0.7,
        beta=0.04,
        scale_rewards="group",
    )
    tasks = [
        cls(n_train=200, n_val=8)
        for cls in (ChatAddition, ChatMultiplication, ChatComparison, ChatWordProblem)
    ]
    data = MultiTaskDataModule(tasks, batch_size=4, steps_per_epoch=steps)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Meter()],
    )
    trainer.fit(module, data)
    return {
        "rss_at_step_start_mb": starts,
        "rss_at_end_mb": rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=("trim", "no-trim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker == "trim", args.steps, args.threads)
        print("RESULT " + json.dumps(result), flush=True)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    rows = {}
    for mode in ("trim", "no-trim"):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps),
             "--threads", str(args.threads)],
            capture_output=True, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"the {mode} run failed ({proc.returncode})")
        rows[mode] = json.loads(lines[-1][len("RESULT ") :])
    label = {"trim": "as shipped (trim after each batch)", "no-trim": "trim disabled"}
    print(f"\nRSS (MB) of GRPO on SmolLM2, {args.steps} steps, {args.threads} threads\n")
    header = " | ".join(f"step {i + 1} start" for i in range(args.steps))
    print(f"| run | {header} | end | peak |")
    print("| --- |" + " ---: |" * (args.steps + 2))
    for mode, r in rows.items():
        cells = " | ".join(f"{v:.0f}" for v in r["rss_at_step_start_mb"])
        print(f"| {label[mode]} | {cells} | {r['rss_at_end_mb']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
