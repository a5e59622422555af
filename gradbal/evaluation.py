"""Held-out evaluation of a saved policy: greedy decoding, each task's own verifier, per prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbal.datamodules import collate_rows
from gradbal.models import PolicySource
from gradbal.modules.generation import (
    PromptFormat,
    completion_mask,
    decode,
    format_prompts,
    score_by_task,
    tokenize_prompts,
)
from gradbal.rollout import HFGenerate, RolloutEngine, SamplingSettings
from gradbal.tasks import Task, TaskSource


@dataclass(frozen=True)
class TaskEvaluation:
    """Per-prompt score of one task's validation split (in split order): 1/0 for greedy
    decoding, the fraction of correct samples when several are drawn per prompt."""

    task: str
    correct: Tensor  # [n] float in [0, 1]

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def stderr(self) -> float:
        """Standard error of the accuracy over prompts."""
        n = self.correct.numel()
        return float(self.correct.float().std()) / math.sqrt(n) if n > 1 else float("nan")


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
    temperature: float = 0.0,
    num_samples: int = 1,
    seed: int = 0,
    rollout_engine: RolloutEngine | None = None,
) -> list[TaskEvaluation]:
    """Score completions of every validation prompt of every task.

    ``temperature=0`` decodes greedily (one completion per prompt). ``temperature > 0`` draws
    ``num_samples`` completions per prompt (seeded) and scores each prompt by the fraction that
    is correct: pass@1 averaged over samples, the quantity GRPO's sampled reward optimises.
    ``rollout_engine``: what generates (:mod:`gradbal.rollout`; ``None``:
    :class:`~gradbal.rollout.HFGenerate`), attached to the built policy and synced once (version
    0); it draws from torch's global RNG, seeded with ``seed``.

    Example::

        >>> from gradbal.models import TinyPolicy
        >>> from gradbal.tasks import Addition
        >>> [r] = evaluate_policy(TinyPolicy(hidden_size=32, num_layers=1), [Addition(n_train=5, n_val=3)])
        >>> r.task, r.correct.shape
        ('addition', torch.Size([3]))
    """
    if temperature < 0 or num_samples < 1 or (temperature == 0 and num_samples != 1):
        raise ValueError(
            f"Use temperature=0 with num_samples=1 (greedy), or temperature > 0 with "
            f"num_samples >= 1; got temperature={temperature}, num_samples={num_samples}."
        )
    model, tokenizer = policy.build()
    model.to(device).eval()
    engine = rollout_engine or HFGenerate(logprobs=False)
    engine.attach(model, tokenizer)
    engine.sync_weights(model.named_parameters() if engine.needs_weight_sync else (), 0)
    sampling = SamplingSettings(
        max_new_tokens=max_new_tokens, temperature=temperature or 1.0, do_sample=temperature > 0
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
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
            k = num_samples
            out = engine.generate(ids, mask, num_completions=k, sampling=sampling).completion_ids
            cmask, _ = completion_mask(out, tokenizer.eos_token_id)
            ok = score_by_task(
                loaded,
                batch["task_id"].repeat_interleave(k).tolist(),
                [p for p in batch["prompt"] for _ in range(k)],
                decode(tokenizer, out, cmask),
                [a for a in batch["answer"] for _ in range(k)],
                [c for c in batch["columns"] for _ in range(k)],
            ).correct
            correct.append(ok.float().view(-1, k).mean(dim=1).cpu())
        results.append(TaskEvaluation(task.name, torch.cat(correct)))
    torch.random.set_rng_state(generator_state)
    return results
