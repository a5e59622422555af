"""DPO vs Balanced-DPO vs BPO on the built-in preference tasks: accuracy, chosen log-probs, gradients.

Per seed: a tiny Llama-style policy (TinyPolicy, 2 layers, hidden 64) gets a short SFT warm start
on the chosen completions of the three preference tasks (PreferenceFormat, PreferenceArithmetic,
PreferenceSort); from that same checkpoint, DPO, BalancedDPO (AdaDPO-style, clip 2) and BPO
(alpha 1) each train for the same steps with the same data order, optimiser and beta. Measured:

* held-out preference accuracy per task (``val/rewards/accuracies/<task>``: the implicit reward
  of the chosen completion above the rejected one's) at the end;
* the mean held-out chosen and rejected log-probabilities (summed over tokens, mean over tasks)
  at the start, middle and end of preference training: does the chosen one fall?
* the rejected/chosen gradient-norm ratio of the applied gradient on all linear layers
  (``PreferenceGradientMonitor``), averaged over the first and the last fifth of training.

Mean +- standard deviation over seeds. Single-threaded; about 4 minutes on one core.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/balanced_dpo.py --write-docs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from typing_extensions import override

from gradbal.callbacks import PreferenceGradientMonitor
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import PretrainedPolicy, TinyPolicy
from gradbal.modules import DPOModule, SFTModule
from gradbal.objectives import BPO, DPO, BalancedDPO, PreferenceObjective
from gradbal.tasks import PreferenceArithmetic, PreferenceFormat, PreferenceSort

TASKS = ("pref_format", "pref_add", "pref_sort")
SECTION = "## DPO vs Balanced-DPO vs BPO"


class MemoryLogger(Logger):
    """Keeps every logged scalar as ``{name: [(step, value), ...]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[tuple[int, float]]] = defaultdict(list)

    @property
    @override
    def name(self) -> str:
        return "memory"

    @property
    @override
    def version(self) -> int:
        return 0

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.values[key].append((step or 0, float(value)))

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def data(seed: int, batch_size: int) -> MultiTaskDataModule:
    tasks = [
        PreferenceFormat(n_train=2000, n_val=100),
        PreferenceArithmetic(n_train=2000, n_val=100),
        PreferenceSort(n_train=2000, n_val=100),
    ]
    return MultiTaskDataModule(
        tasks, batch_size=batch_size, steps_per_epoch=10_000, seed=seed, val_batch_size=100
    )


def trainer(steps: int, logger: Logger | bool, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def warm_start(seed: int, steps: int, out: Path) -> str:
    """SFT on the chosen completions; returns the exported directory."""
    pl.seed_everything(seed)
    sft = SFTModule(
        TinyPolicy(hidden_size=64, num_layers=2, seed=seed),
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.0),
    )
    trainer(steps, False, limit_val_batches=0).fit(sft, data(seed, batch_size=32))
    return str(sft.save_pretrained(out / f"sft_{seed}"))


def run(
    objective: PreferenceObjective, start: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    pl.seed_everything(seed)
    module = DPOModule(
        PretrainedPolicy(start),
        objective,
        optimizer=lambda p: torch.optim.AdamW(p, lr=args.lr, weight_decay=0.0),
        reference="precomputed",
    )
    logger = MemoryLogger()
    monitor = PreferenceGradientMonitor("all_linear", every_n_steps=args.every)
    t = trainer(
        args.steps,
        logger,
        callbacks=[monitor],
        log_every_n_steps=args.every,
        val_check_interval=args.steps // 2,
    )
    dm = data(seed, args.batch_size)
    t.validate(module, dm, verbose=False)  # step 0
    t.fit(module, dm)  # validates at the middle and the end
    v = logger.values
    ratios = [value for _, value in v["train/grad_ratio/rejected_over_chosen"]]
    fifth = max(1, len(ratios) // 5)
    return {
        "accuracy": {task: v[f"val/rewards/accuracies/{task}"][-1][1] for task in TASKS},
        "chosen": [value for _, value in v["val/logps/chosen"]],  # start, middle, end
        "rejected": [value for _, value in v["val/logps/rejected"]],
        "ratio_first": statistics.fmean(ratios[:fifth]),
        "ratio_last": statistics.fmean(ratios[-fifth:]),
        "cosine": statistics.fmean(value for _, value in v["train/grad_cos/chosen_rejected"]),
    }


def fmt(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    head = (
        "| objective | " + " | ".join(f"acc {t}" for t in TASKS) + " | acc mean "
        "| chosen logp start → mid → end (± std at end) | rejected logp start → end "
        "| ‖g_rejected‖/‖g_chosen‖ first 20% | last 20% | cos(g_chosen, g_rejected) |"
    )
    lines = [head, "|" + " --- |" * 10]
    for name, runs in results.items():
        accs = [fmt([r["accuracy"][t] for r in runs]) for t in TASKS]
        mean_acc = fmt([statistics.fmean(r["accuracy"].values()) for r in runs])
        chosen = " → ".join(
            f"{statistics.fmean(r['chosen'][i] for r in runs):.1f}" for i in range(3)
        )
        rejected = " → ".join(
            f"{statistics.fmean(r['rejected'][i] for r in runs):.1f}" for i in (0, 2)
        )
        end_chosen_std = statistics.stdev([r["chosen"][2] for r in runs]) if len(runs) > 1 else 0
        lines.append(
            f"| {name} | "
            + " | ".join(accs)
            + f" | {mean_acc} | {chosen} (± {end_chosen_std:.1f}) "
            f"| {rejected} | {fmt([r['ratio_first'] for r in runs])} "
            f"| {fmt([r['ratio_last'] for r in runs])} | {fmt([r['cosine'] for r in runs])} |"
        )
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md, leaving the rest.

    A ``### Reading`` subsection already in the section (the interpretation, written by hand)
    is kept after the new table.
    """
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION not in current:
        path.write_text(current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return
    before, after = current.split(SECTION, 1)
    section, _, tail = after.partition("\n## ")
    reading = section[section.index("### Reading") :] if "### Reading" in section else ""
    new = "\n\n".join(part.strip("\n") for part in (text, reading) if part)
    path.write_text(before.rstrip("\n") + "\n\n" + new + "\n" + ("\n## " + tail if tail else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=5, help="measure gradients every n steps")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    objectives: dict[str, PreferenceObjective] = {
        "DPO": DPO(beta=args.beta),
        "BalancedDPO (AdaDPO-style, C=2)": BalancedDPO(beta=args.beta, clip=2.0),
        "BPO (alpha=1)": BPO(beta=args.beta, alpha=1.0),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in objectives}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = warm_start(seed, args.sft_steps, Path(tmp))
            for name, objective in objectives.items():
                results[name].append(run(objective, start, seed, args))
                print(f"seed {seed} {name}: {results[name][-1]}", flush=True)
    minutes = (time.perf_counter() - began) / 60
    description = textwrap.fill(
        f"TinyPolicy (Llama-style, 2 layers, hidden 64) after {args.sft_steps} SFT steps on the "
        f"chosen completions; then {args.steps} preference steps per objective from that "
        f"checkpoint, batch {args.batch_size} pairs, AdamW lr {args.lr}, beta {args.beta}, "
        f"reference log-probs precomputed from the SFT model; seeds {args.seeds} (mean ± std). "
        "Accuracy: held-out pairs whose implicit reward ranks chosen above rejected (100 per "
        "task). Log-probs: held-out, summed over tokens, mean over tasks. Gradient ratio: "
        "`train/grad_ratio/rejected_over_chosen`, the norms of the two parts of the applied "
        "gradient, and `train/grad_cos/chosen_rejected` (mean over the run), on all linear "
        f"layers every {args.every} steps.",
        width=96,
        break_on_hyphens=False,
    )
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/balanced_dpo.py --write-docs"
    text = (
        f"{SECTION}\n\n{description}\n\n"
        f"Command ({time.strftime('%Y-%m-%d')}, 1 thread, {minutes:.1f} min):\n\n"
        f"    {command}\n\n{table(results)}\n"
    )
    print(text)
    if args.write_docs:
        write_docs(Path(__file__).parents[1] / "docs" / "benchmarks.md", text)


if __name__ == "__main__":
    main()
