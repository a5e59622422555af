"""Held-out evaluation of a saved policy: greedy decoding, each task's own verifier, per prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbal.datamodules import collate_rows
from gradbal.models import PolicySource
from gradbal.modules._generation import decode, generate, score_by_task
from gradbal.modules._sequences import (
    PromptFormat,
    completion_mask,
    format_prompts,
    tokenize_prompts,
)
from gradbal.tasks import Task, TaskSource


@dataclass(frozen=True)
class TaskEvaluation:
    """Per-prompt correctness of one task's validation split (in split order)."""

    task: str
    correct: Tensor  # [n] bool

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy."""
        n = self.correct.numel()
        p = self.accuracy
        return math.sqrt(p * (1 - p) / n) if n > 1 else float("nan")


@torch.no_grad()
def evaluate_policy(
    policy: PolicySource,
    tasks: Sequence[Task | TaskSource],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 200,
    prompt_format: PromptFormat = "auto",
    max_samples_per_task: int | None = None,
    device: str | torch.device = "cpu",
) -> list[TaskEvaluation]:
    """Score greedy completions of every validation prompt of every task.

    Example::

        >>> from gradbal.models import TinyPolicy
        >>> from gradbal.tasks import Addition
        >>> [r] = evaluate_policy(TinyPolicy(hidden_size=32, num_layers=1), [Addition(n_train=5, n_val=3)])
        >>> r.task, r.correct.shape
        ('addition', torch.Size([3]))
    """
    model, tokenizer = policy.build()
    model.to(device).eval()
    loaded = [t if isinstance(t, Task) else t.load() for t in tasks]
    results = []
    for t, task in enumerate(loaded):
        split = task.validation
        if max_samples_per_task is not None:
            split = split.select(range(min(max_samples_per_task, len(split))))
        correct = []
        for start in range(0, len(split), batch_size):
            rows = [(t, split[i]) for i in range(start, min(start + batch_size, len(split)))]
            batch = collate_rows(rows)
            prompts = format_prompts(tokenizer, batch["prompt"], prompt_format)
            ids, mask = tokenize_prompts(tokenizer, prompts, None, torch.device(device))
            out = generate(
                model, tokenizer, ids, mask, max_new_tokens=max_new_tokens, do_sample=False
            )
            cmask, _ = completion_mask(out, tokenizer.eos_token_id)
            _, ok = score_by_task(
                loaded,
                batch["task_id"].tolist(),
                batch["prompt"],
                decode(tokenizer, out, cmask),
                batch["answer"],
                batch["columns"],
            )
            correct.append(ok.cpu())
        results.append(TaskEvaluation(task.name, torch.cat(correct)))
    return results
