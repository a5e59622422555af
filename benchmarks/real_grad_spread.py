"""Per-task ||G||^2 spread on the shipped real model, at a fixed model, pooled over many groups.

The demo's monitor sees about 2 groups per task in a step, too few to resolve each task's
``||G||^2`` (docs/benchmarks.md). Here the model is held fixed (SmolLM2-135M-Instruct with fresh
LoRA adapters; SGD with lr 0, so every batch sees the same weights) and each task's estimate
is pooled over ``--prompts-per-task`` groups. Everything runs through the library: the policy
is built by ``PretrainedPolicy``, ``GRPOModule.training_step`` (inside ``Trainer.fit``) generates
the completions with the chat template, scores them with the task rewards, computes the group
advantages and the per-sequence loss shares, and :class:`~gradbal.gradstats.TaskGradCapture`
collects the gradient shares in the training backward, one capture per selection.

Estimator. Each task's groups (prompts) are dealt round-robin into ``--blocks`` blocks, one
capture segment per (task, block); shares add up over every batch of the run. Then
:func:`~gradbal.gradstats.task_grad_stats` gives, per task, the sum of the cross-block inner
products over the sum of the cross-block group-pair counts (cross sums and pair counts are
pooled over all batches before dividing): unbiased for ``||G||^2``, ``G`` the gradient of the
task's mean per-group loss in the units of ``task_losses`` (DAPO: divided by the batch's tokens;
every batch holds the same number of prompts of each task). The standard error is a jackknife
over blocks (delete one block of every task at a time). A task is *resolved* when its estimate
is more than 2 s.e. above 0; ratios are over resolved tasks only.

The settings default to ``configs/real/grpo_demo.yaml`` (4 completions, 16 new tokens, T 0.7,
group-scaled advantages, clip 0.2/0.28, no KL, LoRA r16 alpha 32 on every linear layer, 8
prompts a batch = 2 per task). With fresh adapters ``lora_B`` is 0, so only ``lora_B`` has a
non-zero gradient (``lora_A``'s is exactly 0); a KL term would add nothing (policy = reference).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_grad_spread.py --prompts-per-task 48
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_grad_spread.py --prompts-per-task 96 \\
        --selections last_attention_block
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from gradbal.datamodules.multitask import collate_rows
from gradbal.gradstats import TaskGradCapture, task_grad_stats
from gradbal.models import LoRA, PolicySource, PretrainedPolicy
from gradbal.modules import GRPOModule
from gradbal.modules.grpo import Rollout
from gradbal.tasks import ChatAddition, ChatComparison, ChatMultiplication, ChatWordProblem, Task

#: ``--selections`` names: ``lora`` is every trainable (LoRA) parameter; any other value is
#: passed to TaskGradCapture as is (a named selection or a regular expression on module names).
ALIASES = {"lora": "trainable"}


class TaskSpread(NamedTuple):
    """One task's pooled estimate under one selection."""

    task: str
    groups: int
    active_groups: int  # groups with a non-zero advantage (the others have a zero gradient)
    unbiased_sq: float
    se: float

    @property
    def resolved(self) -> bool:
        return self.groups > 1 and self.unbiased_sq > 2 * self.se


class _SpreadGRPO(GRPOModule):
    """GRPOModule that keeps its last rollout (to count groups with non-zero advantages)."""

    last_rollout: Rollout | None = None

    @override
    def make_rollout(self, batch: dict[str, Any], micro_batch: int = 0) -> Rollout:
        self.last_rollout = super().make_rollout(batch, micro_batch)
        return self.last_rollout


class _Batches(pl.LightningDataModule):
    """Fixed batches, each with the same number of prompts of every task, in task order."""

    def __init__(self, tasks: Sequence[Task], prompts_per_task: int, per_batch: int) -> None:
        super().__init__()
        self.tasks, self.task_names = list(tasks), [t.name for t in tasks]
        self.batches = []
        for start in range(0, prompts_per_task, per_batch):
            rows = [
                (k, task.train[i])
                for k, task in enumerate(tasks)
                for i in range(start, min(start + per_batch, prompts_per_task))
            ]
            self.batches.append(collate_rows(rows))

    @override
    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, collate_fn=lambda b: b)  # type: ignore[arg-type]


def block_segments(task_ids: Tensor, group_ids: Tensor, seen: list[int], blocks: int) -> Tensor:
    """``[N]`` segment ``task * blocks + block`` of each row; a task's groups are dealt to the
    blocks round-robin in group-id order, ``seen[task]`` counting the task's groups so far
    (updated in place)."""
    segments = torch.empty_like(task_ids)
    for gid in group_ids.unique(sorted=True).tolist():
        rows = group_ids == gid
        task = int(task_ids[rows][0])
        segments[rows] = task * blocks + seen[task] % blocks
        seen[task] += 1
    return segments


class _SpreadCapture(pl.Callback):
    """Sets every capture's segments before each backward; counts groups and active groups."""

    def __init__(
        self, selections: dict[str, str], num_tasks: int, blocks: int, verbose: bool = False
    ) -> None:
        self.selections, self.num_tasks, self.blocks = selections, num_tasks, blocks
        self.verbose, self.start = verbose, time.perf_counter()
        self.captures: dict[str, TaskGradCapture] = {}
        self.seen = [0] * num_tasks
        self.active = [0] * num_tasks

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        assert isinstance(model, torch.nn.Module)
        self.captures = {
            name: TaskGradCapture(model, selection).attach()
            for name, selection in self.selections.items()
        }

    @override
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        module: _SpreadGRPO = pl_module  # type: ignore[assignment]
        reported, rollout = module.task_losses, module.last_rollout
        assert reported is not None and rollout is not None and module.grad_rescale == 1.0
        segments = block_segments(reported.task_ids, reported.group_ids, self.seen, self.blocks)
        for capture in self.captures.values():
            capture.set_segments(segments, self.num_tasks * self.blocks, reported.group_ids)
        g = module.num_generations
        active = rollout.advantages.view(-1, g).ne(0).any(1)  # [B] per group
        for task, on in zip(rollout.task_ids[::g].tolist(), active.tolist(), strict=True):
            self.active[task] += int(on)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self.verbose:
            total = trainer.num_training_batches
            elapsed = time.perf_counter() - self.start
            print(f"batch {i + 1}/{total} done, {elapsed:.0f} s", flush=True)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for capture in self.captures.values():
            capture.detach()


def _gram64(capture: TaskGradCapture) -> Tensor:
    """``[S, S]`` Gram of the captured shares in float64 (the cross sums are small differences
    of large sums; ``TaskGradCapture.gram`` multiplies in the shares' fp32)."""
    shares = list(capture.segment_grads().values())
    if not shares:
        raise RuntimeError(f"Nothing was captured: {capture.missed_layers()}")
    flat = torch.cat([s.flatten(1).double() for s in shares], dim=1)  # [S, P]
    return flat @ flat.T


def pooled_estimates(
    gram: Tensor, groups_per_segment: Tensor, num_tasks: int, blocks: int
) -> tuple[Tensor, Tensor]:
    """Each task's pooled cross-block estimate of ``||G||^2`` and its jackknife s.e. over blocks.

    ``gram`` is ``[K*B, K*B]`` over segments ``task * B + block``. Deleting block ``b`` zeroes
    that block's segment of every task; the delete-one estimates ``t_b`` give
    ``se^2 = (B - 1) / B * sum_b (t_b - mean t)^2``.
    """
    segment_tasks = torch.arange(num_tasks * blocks) // blocks
    kwargs: dict[str, Any] = {"segment_tasks": segment_tasks, "num_tasks": num_tasks}
    full = task_grad_stats(gram, groups_per_segment, **kwargs).unbiased_sq  # [K]
    deleted = []
    for b in range(blocks):
        keep = (torch.arange(num_tasks * blocks) % blocks != b).to(gram.dtype)  # [S]
        masked = gram * keep[:, None] * keep[None, :]
        deleted.append(task_grad_stats(masked, groups_per_segment * keep.long(), **kwargs)[0])
    t = torch.stack(deleted)  # [B, K]
    se = ((blocks - 1) / blocks * (t - t.mean(0)).square().sum(0)).sqrt()
    return full, se


def measure_spread(
    policy: PolicySource,
    tasks: Sequence[Task],
    *,
    prompts_per_task: int,
    prompts_per_batch: int = 2,
    selections: Sequence[str] = ("lora",),
    blocks: int = 8,
    num_generations: int = 4,
    max_new_tokens: int = 16,
    temperature: float = 0.7,
    seed: int = 0,
    callbacks: Sequence[pl.Callback] = (),
    verbose: bool = False,
) -> dict[str, list[TaskSpread]]:
    """Run the fixed-model measurement; ``{selection: [TaskSpread per task]}``.

    Args:
        policy: Where the model comes from (with LoRA: fresh adapters).
        tasks: Loaded tasks; the first ``prompts_per_task`` train prompts of each are used.
        prompts_per_task: Groups per task.
        prompts_per_batch: Prompts of each task in one batch (a batch holds all tasks).
        selections: ``lora`` or any TaskGradCapture selection, one capture each.
        blocks: Blocks of groups per task (segments of the estimator, jackknife units).
        callbacks: Extra callbacks for the fit (the test's brute force).
        verbose: Print a line after each batch.
    """
    if blocks < 3:
        raise ValueError(
            f"blocks must be >= 3 (got {blocks}): the estimate needs 2 blocks, and the jackknife "
            "deletes one at a time."
        )
    if prompts_per_task < blocks:
        raise ValueError(
            f"prompts_per_task ({prompts_per_task}) must be at least blocks ({blocks}), so "
            "that every block holds a group of every task."
        )
    torch.manual_seed(seed)
    module = _SpreadGRPO(
        policy,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.0),  # the model stays fixed
        num_generations=num_generations,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        scale_rewards="group",
        epsilon_low=0.2,
        epsilon_high=0.28,
        beta=0.0,
        generation_seed=seed,
        identical_groups_patience=None,
    )
    data = _Batches(tasks, prompts_per_task, prompts_per_batch)
    spread = _SpreadCapture({s: ALIASES.get(s, s) for s in selections}, len(tasks), blocks, verbose)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[spread, *callbacks],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(module, data)
    out: dict[str, list[TaskSpread]] = {}
    for name, capture in spread.captures.items():
        counts = capture.groups_per_segment()
        est, se = pooled_estimates(_gram64(capture), counts, len(tasks), blocks)
        groups = counts.view(len(tasks), blocks).sum(1)
        out[name] = [
            TaskSpread(t.name, int(n), a, float(e), float(s))
            for t, n, a, e, s in zip(tasks, groups, spread.active, est, se, strict=True)
        ]
        capture.reset()
    return out


def spread_table(rows: Sequence[TaskSpread]) -> tuple[str, float, list[str]]:
    """Markdown table, max/min estimate over resolved tasks (NaN if fewer than 2), resolved."""
    resolved = [r for r in rows if r.resolved]
    smallest = min((r.unbiased_sq for r in resolved), default=float("nan"))
    lines = [
        "| task | groups | groups with non-zero advantage | ||G||^2 | s.e. | / smallest resolved |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.resolved:
            rel = f"{r.unbiased_sq / smallest:.1f}x"
        else:
            rel = "not resolved: " + (
                "no s.e."
                if not math.isfinite(r.se)
                else "within 2 s.e. of 0"
                if abs(r.unbiased_sq) <= 2 * r.se
                else "below 0"
            )
        lines.append(
            f"| {r.task} | {r.groups} | {r.active_groups} | {r.unbiased_sq:.3e} | {r.se:.3e} "
            f"| {rel} |"
        )
    largest = max((r.unbiased_sq for r in resolved), default=float("nan"))
    ratio = largest / smallest if len(resolved) >= 2 else float("nan")
    return "\n".join(lines), ratio, [r.task for r in resolved]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts-per-task", type=int, default=48, help="groups per task")
    parser.add_argument(
        "--selections",
        nargs="+",
        default=["lora", "last_attention_block"],
        help="lora (all LoRA parameters) or any TaskGradCapture selection",
    )
    parser.add_argument("--blocks", type=int, default=8, help="blocks of groups per task")
    parser.add_argument("--prompts-per-batch", type=int, default=2, help="per task, per batch")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    n = args.prompts_per_task
    tasks = [
        cls(n_train=n, n_val=1).load()
        for cls in (ChatAddition, ChatMultiplication, ChatComparison, ChatWordProblem)
    ]
    policy = PretrainedPolicy(
        "smollm2-135m-instruct",
        dtype="float32",
        lora=LoRA(r=16, alpha=32, target_modules="all-linear"),
    )
    results = measure_spread(
        policy,
        tasks,
        prompts_per_task=n,
        prompts_per_batch=args.prompts_per_batch,
        selections=args.selections,
        blocks=args.blocks,
        num_generations=args.num_generations,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        verbose=True,
    )
    print(
        f"\nSmolLM2-135M-Instruct, fresh LoRA r16 (fixed model), {n} prompts per task x "
        f"{args.num_generations} completions, up to {args.max_new_tokens} new tokens, T "
        f"{args.temperature:g}, {args.prompts_per_batch * len(tasks)} prompts a batch; pooled "
        f"cross-block estimate over {args.blocks} blocks, s.e. jackknife over blocks"
    )
    for name, rows in results.items():
        table, ratio, resolved = spread_table(rows)
        print(f"\nSelection {name!r} ({ALIASES.get(name, name)}):\n")
        print(table)
        if len(resolved) >= 2:
            print(
                f"\nLargest / smallest ||G||^2 over the {len(resolved)} resolved tasks "
                f"({', '.join(resolved)}): {ratio:.1f}x"
            )
        else:
            print(
                f"\nNot resolved: {len(resolved)} of {len(rows)} tasks have an estimate more "
                "than 2 s.e. above 0; no ratio."
            )
    elapsed = time.perf_counter() - start
    print(f"\nWall time {elapsed:.0f} s ({math.floor(elapsed / 60)} min {elapsed % 60:.0f} s)")


if __name__ == "__main__":
    main()
