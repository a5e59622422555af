"""A GRPOModule with hand-made rollouts, and the data layout of the accumulation x ranks tests.

``ProbeGRPO(fixed=True)`` replaces generation by deterministic rollouts built from each row's
index (:func:`fixed_parts`): the same rows give the same sequences, lengths, truncations and
rewards whatever the rank, the micro-batch or the batch they are in, so a 2-rank run with
gradient accumulation and one process over the same global batch train on identical rollouts.
Prompts and completions have fixed widths, so concatenating micro-batches is concatenating
tensors. ``fixed=False`` keeps real generation and only records each rollout.

Micro-batch ``m`` (counted over the whole run) on rank ``r`` of ``W`` holds the rows
``rows_for(m, r, W, B)``; one process with ``B * W * K`` rows per batch sees, at step ``s``,
exactly the rows of micro-batches ``s * K .. s * K + K - 1`` of every rank.
"""

from __future__ import annotations

from typing import Any

import datasets
import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.modules._sequences import completion_mask, join, left_pad
from gradbal.modules.grpo import Rollout
from gradbal.objectives import group_advantages
from gradbal.tasks import Task

G, C, P = 2, 6, 8  # completions per prompt, max new tokens, prompt width


def length_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """A reward with spread for random policies: completion length mod 3, halved."""
    return [(len(c) % 3) / 2 for c in completions]


def make_task(name: str) -> Task:
    rows = {"prompt": [f"q{i}" for i in range(4)], "answer": ["" for _ in range(4)]}
    split = datasets.Dataset.from_dict(rows)
    return Task(name=name, train=split, validation=split, reward=length_reward)


def rows_for(micro: int, rank: int, world_size: int, batch_size: int) -> list[int]:
    start = micro * world_size * batch_size + rank * batch_size
    return list(range(start, start + batch_size))


def batch_of(rows: list[int]) -> dict[str, Any]:
    return {
        "task_id": torch.tensor([i % 2 for i in rows]),
        "prompt": [f"q{i}=" for i in rows],
        "answer": ["" for _ in rows],
        "columns": [{"idx": i} for i in rows],
    }


def _identity(x: Any) -> Any:
    return x


class RowData(pl.LightningDataModule):
    """Rank ``r`` gets micro-batches ``rows_for(m, r, W, B)`` for ``m = 0, 1, ...``, in order."""

    def __init__(self, batch_size: int, num_batches: int, tasks: int = 2) -> None:
        super().__init__()
        self.batch_size, self.num_batches = batch_size, num_batches
        self.tasks = [make_task(f"t{i}") for i in range(tasks)]
        self.task_names = [t.name for t in self.tasks]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None
        w, r = trainer.world_size, trainer.global_rank
        batches = [batch_of(rows_for(m, r, w, self.batch_size)) for m in range(self.num_batches)]
        return DataLoader(batches, batch_size=None, collate_fn=_identity)  # type: ignore[arg-type]


def fixed_parts(
    rows: list[int], tokenizer: Any, one_token_row: int | None = None
) -> tuple[Any, Tensor, Tensor, Tensor]:
    """Sequences, truncated flags, rewards and group advantages for ``rows`` (``G`` each).

    Completion ``j`` of row ``i`` has ``1 + (5 i + 3 j) % C`` tokens ending in eos, except every
    ``(i + j) % 4 == 3`` one, which is cut at ``C`` tokens (truncated). ``one_token_row``: all
    completions truncated but completion 0 of that row, a lone eos (one active token under
    ``mask_truncated_completions``).
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompts = [tokenizer(f"q{i}=", add_special_tokens=False)["input_ids"] for i in rows]
    prompt_ids, prompt_mask = left_pad(
        [[pad] * (P - len(p)) + p for p in prompts], pad, torch.device("cpu")
    )
    prompt_mask = (prompt_ids != pad).long()
    completions, rewards = [], []
    for i in rows:
        for j in range(G):
            body = tokenizer("abcdefghij"[(i + j) % 5 :], add_special_tokens=False)["input_ids"]
            if one_token_row is not None:
                ids = [eos] if (i, j) == (one_token_row, 0) else body[:C]
            elif (i + j) % 4 == 3:
                ids = body[:C]
            else:
                ids = [*body[: (5 * i + 3 * j) % C], eos]
            completions.append(ids + [pad] * (C - len(ids)))
            rewards.append(float((3 * i + 2 * j) % 4) / 3)
    completion_ids = torch.tensor(completions)  # [N, C]
    cmask, truncated = completion_mask(completion_ids, eos)
    seqs = join(
        prompt_ids.repeat_interleave(G, 0),
        prompt_mask.repeat_interleave(G, 0),
        completion_ids,
        cmask,
    )
    rewards_t = torch.tensor(rewards)
    return seqs, truncated, rewards_t, group_advantages(rewards_t, G, "group")


class ProbeGRPO(GRPOModule):
    """GRPOModule recording, per training micro-batch, which rows its rollout came from."""

    def __init__(self, fixed: bool = True, one_token: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("num_generations", G)
        kwargs.setdefault("max_new_tokens", C)
        super().__init__(TinyPolicy(hidden_size=32, num_layers=1), **kwargs)
        self.fixed, self.one_token = fixed, one_token
        self.trained: list[dict[str, Any]] = []  # one entry per training micro-batch
        self.rollouts: list[dict[str, Any]] = []  # one entry per rollout made
        self._origin: dict[int, list[int]] = {}
        self._making = False

    def make_rollout(self, batch: dict[str, Any], *args: Any) -> Rollout:
        rows = [c["idx"] for c in batch["columns"]] if self.fixed else list(batch["prompt"])
        if not self.fixed:
            rollout = super().make_rollout(batch, *args)
        else:
            one = (0 if self.global_rank == 0 else -1) if self.one_token else None
            seqs, truncated, rewards, advantages = fixed_parts(rows, self.tokenizer, one)
            n = len(rows) * G
            self._making = True
            with torch.no_grad():
                old = self._policy_logprobs(seqs) if self.num_iterations > 1 else None
            self._making = False
            rollout = Rollout(
                seqs=seqs,
                task_ids=batch["task_id"].repeat_interleave(G),
                group_ids=torch.arange(len(rows)).repeat_interleave(G),
                rewards=rewards,
                advantages=advantages,
                truncated=truncated,
                old_logprobs=old,
                ref_logprobs=self._reference_logprobs(seqs) if self.beta > 0 else None,
                reward_errors=torch.zeros(n, dtype=torch.bool),
            )
        self._origin[id(rollout.seqs.input_ids)] = rows
        self.rollouts.append(
            {"rows": rows, "rewards": rollout.rewards, "advantages": rollout.advantages}
        )
        return rollout

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        loss = super().training_step(batch, batch_idx)
        assert self.task_losses is not None and loss is not None
        assert torch.equal(self.task_losses.losses.sum(), loss)  # shares sum to the loss
        return loss

    def _policy_logprobs(self, seqs: Any) -> Tensor:
        if not self._making and id(seqs.input_ids) in self._origin:
            self.trained.append(
                {"step": self.global_step, "rows": self._origin[id(seqs.input_ids)]}
            )
        return super()._policy_logprobs(seqs)


class Record(pl.Callback):
    """Parameters before every optimiser step and at the end, and ``train/loss`` per step."""

    def __init__(self) -> None:
        self.params: list[list[Tensor]] = []
        self.losses: dict[int, float] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if len(self.params) == trainer.global_step:
            self.params.append([p.detach().clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and trainer.global_step >= 1:
            self.losses.setdefault(trainer.global_step - 1, float(loss))

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.params.append([p.detach().clone() for p in pl_module.parameters()])


def run(
    module: ProbeGRPO,
    *,
    batch_size: int,
    accumulate: int,
    steps: int,
    devices: int = 1,
    lr: float = 0.5,
) -> tuple[ProbeGRPO, Record]:
    """Fit ``steps`` optimiser steps with plain SGD (update = -lr * gradient)."""
    from lightning.pytorch.strategies import DDPStrategy

    module.optimizer_factory = lambda params: torch.optim.SGD(params, lr=lr)
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto",
        max_steps=steps,
        accumulate_grad_batches=accumulate,
        use_distributed_sampler=False,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, RowData(batch_size, num_batches=steps * accumulate))
    return module, record


class LengthTask:
    """A ``TaskSource`` for :func:`make_task` (rewards with spread, for real generation)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> Task:
        return make_task(self.name)
