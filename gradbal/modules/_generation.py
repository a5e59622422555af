"""Sampling completions from the policy, and scoring them with each task's reward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from gradbal.tasks import Task, score


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    max_new_tokens: int,
    num_return_sequences: int = 1,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
) -> Tensor:
    """Completion token ids ``[B * num_return_sequences, C]`` (prompt columns stripped).

    Rows are grouped by prompt: rows ``i*G .. i*G+G-1`` are prompt ``i``'s completions. The model
    is put in eval mode while it generates (no dropout), then restored.
    """
    was_training = model.training
    model.eval()
    try:
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or 0}
            if do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        out = model.generate(  # type: ignore[operator]
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **sampling,
        )
    finally:
        model.train(was_training)
    return out[:, prompt_ids.shape[1] :]


def decode(tokenizer: PreTrainedTokenizerBase, completion_ids: Tensor, mask: Tensor) -> list[str]:
    """Text of each completion's counted tokens (special tokens dropped)."""
    return [
        str(tokenizer.decode(ids[m].tolist(), skip_special_tokens=True))
        for ids, m in zip(completion_ids, mask, strict=True)
    ]


def score_by_task(
    tasks: Sequence[Task],
    task_ids: Sequence[int],
    prompts: Sequence[str],
    completions: Sequence[str],
    answers: Sequence[str],
    columns: Sequence[dict[str, Any]],
) -> tuple[Tensor, Tensor]:
    """Rewards ``[N]`` and correctness ``[N]`` (reward >= the task's success threshold).

    Each task's reward function is called once, on that task's rows only.
    """
    rewards = torch.zeros(len(prompts), dtype=torch.float32)
    correct = torch.zeros(len(prompts), dtype=torch.bool)
    for t in sorted(set(task_ids)):
        rows = [i for i, tid in enumerate(task_ids) if tid == t]
        task = tasks[t]
        values = score(
            task,
            [prompts[i] for i in rows],
            [completions[i] for i in rows],
            [columns[i] for i in rows],
            answers=[answers[i] for i in rows],
        )
        r = torch.tensor(values, dtype=torch.float32)
        rewards[rows] = r
        correct[rows] = r >= task.success_threshold
    return rewards, correct
