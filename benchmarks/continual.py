"""GSA vs ER vs fine-tuning on online class-incremental digits: final accuracy and forgetting.

Every run is the full stream of ``configs/continual/gsa_digits.yaml`` (scikit-learn digits, 5
tasks of 2 classes, stream batch 10, each sample trained on once, a 2x100 MLP, Adam lr 1e-3,
betas (0.9, 0.99), weight decay 1e-4) driven through a Lightning ``Trainer``; only the objective,
the buffer size and the seed change. A seed fixes the network's initialisation, the train/test
split, the stream order and the buffer's generator, and is shared by the three objectives, so
the comparison is paired. Fine-tuning never reads the buffer, so it is run once per seed.

Prints a Markdown table (final average accuracy and forgetting, mean ± sample standard
deviation over seeds, in %) and the paired GSA - ER differences.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/continual.py          (~1.5 min, 1 core)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch

from gradbal.continual import (
    ER,
    GSA,
    ClassIncrementalDataModule,
    ContinualObjective,
    FineTune,
    OnlineContinualModule,
)

TASKS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
OBJECTIVES: dict[str, Callable[[], ContinualObjective]] = {
    "Fine-tuning": FineTune,
    "ER (replay 10)": lambda: ER(replay_batch_size=10),  # ER's classic 1:1 stream/replay mix
    "ER (replay 64)": lambda: ER(replay_batch_size=64),  # GSA's cross-task batch size
    "GSA": GSA,
}


def run(objective: ContinualObjective, buffer_size: int, seed: int) -> tuple[float, float]:
    """Final average accuracy and forgetting (fractions) of one full stream."""
    pl.seed_everything(seed, verbose=False)
    module = OnlineContinualModule(
        objective,
        optimizer=lambda params: torch.optim.Adam(
            params, lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-4
        ),
        hidden_sizes=[100, 100],
        buffer_size=buffer_size,
        seed=seed,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=len(TASKS),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, ClassIncrementalDataModule(TASKS, batch_size=10, seed=seed))
    metrics = trainer.logged_metrics
    return float(metrics["val/avg_accuracy"]), float(metrics["val/forgetting"])


def mean_std(values: list[float]) -> str:
    """``"mean ± std"`` in percent (sample standard deviation)."""
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffers", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread, one process
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    seeds = range(args.seeds)

    start = time.perf_counter()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for name, make in OBJECTIVES.items():
        for buffer in args.buffers[:1] if name == "Fine-tuning" else args.buffers:
            results[name, buffer] = [run(make(), buffer, seed) for seed in seeds]
            print(f"{name}, buffer {buffer}: done", file=sys.stderr)
    elapsed = time.perf_counter() - start

    def cell(name: str, buffer: int, index: int) -> str:
        key = (name, args.buffers[0]) if name == "Fine-tuning" else (name, buffer)
        return mean_std([r[index] for r in results[key]])

    header = " | ".join(f"M = {b}" for b in args.buffers)
    for title, index in (("Final average accuracy (%)", 0), ("Forgetting (%)", 1)):
        print(f"\n{title}, mean ± std over {args.seeds} seeds:\n")
        print(f"| objective | {header} |")
        print("| --- |" + " --- |" * len(args.buffers))
        for name in OBJECTIVES:
            cells = " | ".join(cell(name, b, index) for b in args.buffers)
            print(f"| {name} | {cells} |")
    print(f"\nPaired GSA - ER over the same {args.seeds} seeds (points, mean ± std):\n")
    print(f"| | {header} |")
    print("| --- |" + " --- |" * len(args.buffers))
    for baseline in ("ER (replay 10)", "ER (replay 64)"):
        for label, index in (("accuracy", 0), ("forgetting", 1)):
            diffs = [
                mean_std(
                    [
                        g[index] - e[index]
                        for g, e in zip(results["GSA", b], results[baseline, b], strict=True)
                    ]
                )
                for b in args.buffers
            ]
            print(f"| {label}, GSA - {baseline} | {' | '.join(diffs)} |")
    runs = sum(len(v) for v in results.values())
    print(f"\n{runs} runs in {elapsed:.0f} s (torch {torch.__version__}, 1 thread).")
    print("Command: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/continual.py")


if __name__ == "__main__":
    main()
