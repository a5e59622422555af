"""Sampling completions from the policy, and scoring them with each task's reward."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from gradbal.rollout.hf_generate import (  # noqa: F401 (re-exported: tests, scripts)
    _FiniteLogits,
    _shared_prefill,
    hf_generate,
)
from gradbal.rollout.sampling import SamplingSettings
from gradbal.rollout.seeding import mix_seed, seeded_rng
from gradbal.tasks import OnRewardError, Task, score, score_or_zero


@contextmanager
def step_rng(
    seed: int | None,
    step: int,
    rank: int,
    device: torch.device | None = None,
    micro_batch: int = 0,
) -> Iterator[None]:
    """Run the body with torch's RNG seeded from ``(seed, step, rank, micro_batch)``, then restore it.

    Sampling inside draws the same numbers whenever the same step runs again on the same rank,
    e.g. after resuming from a checkpoint, and the global RNG is left as it was, so nothing
    else depends on how many tokens were sampled. ``micro_batch``: the position within the
    gradient-accumulation window (0 without accumulation: the seed of ``(seed, step, rank)``).
    ``seed=None``: the body uses the global RNG. (:func:`gradbal.rollout.mix_seed` then
    :func:`gradbal.rollout.seeded_rng`; rollout engines take the mixed seed.)

    Example::

        >>> with step_rng(7, step=3, rank=0):
        ...     a = torch.rand(2)
        >>> with step_rng(7, step=3, rank=0):
        ...     b = torch.rand(2)
        >>> bool((a == b).all())
        True
    """
    mixed = None if seed is None else mix_seed(seed, step, rank, micro_batch)
    with seeded_rng(mixed, device):
        yield


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
    share_prefill: bool = True,
    nonfinite_error: Callable[[], Exception] | None = None,
) -> Tensor:
    """Completion token ids ``[B * num_return_sequences, C]`` (prompt columns stripped).

    What :class:`gradbal.rollout.HFGenerate` runs, without log-probs or finish reasons (kept for
    validation and scripts); draws from the global torch RNG. See
    :func:`gradbal.rollout.hf_generate.hf_generate`.
    """
    sampling = SamplingSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        do_sample=do_sample,
    )
    ids, _ = hf_generate(
        model,
        tokenizer,
        prompt_ids,
        prompt_mask,
        sampling,
        num_return_sequences=num_return_sequences,
        share_prefill=share_prefill,
        nonfinite_error=nonfinite_error,
    )
    return ids


def decode(tokenizer: PreTrainedTokenizerBase, completion_ids: Tensor, mask: Tensor) -> list[str]:
    """Text of each completion's counted tokens (special tokens dropped)."""
    return [
        str(tokenizer.decode(ids[m].tolist(), skip_special_tokens=True))
        for ids, m in zip(completion_ids, mask, strict=True)
    ]


class TaskScores(NamedTuple):
    """Per-sample rewards ``[N]``, correctness ``[N]`` and reward failures ``[N]`` (bool)."""

    rewards: Tensor
    correct: Tensor
    failed: Tensor


def score_by_task(
    tasks: Sequence[Task],
    task_ids: Sequence[int],
    prompts: Sequence[str],
    completions: Sequence[str],
    answers: Sequence[str],
    columns: Sequence[dict[str, Any]],
    on_reward_error: OnRewardError = "raise",
    warned: set[str] | None = None,
) -> TaskScores:
    """Score every sample with its task's reward (correct: reward >= the success threshold).

    Each task's reward function is called once, on that task's rows only. With
    ``on_reward_error="zero"`` a sample whose reward fails scores 0.0 and is flagged in
    ``failed`` (a warning names the task and the first error; once per task name in ``warned``,
    which the caller owns, or on every failing call if ``None``); with ``"raise"``
    the first failure raises with the task name and an example input.
    """
    rewards = torch.zeros(len(prompts), dtype=torch.float32)
    correct = torch.zeros(len(prompts), dtype=torch.bool)
    failed = torch.zeros(len(prompts), dtype=torch.bool)
    for t in sorted(set(task_ids)):
        rows = [i for i, tid in enumerate(task_ids) if tid == t]
        task = tasks[t]
        args = (
            task,
            [prompts[i] for i in rows],
            [completions[i] for i in rows],
            [columns[i] for i in rows],
        )
        answers_t = [answers[i] for i in rows]
        if on_reward_error == "raise":
            values, flags = score(*args, answers=answers_t), [False] * len(rows)
        else:
            scores = score_or_zero(*args, answers=answers_t)
            values, flags = scores.values, scores.failed
            if scores.first_error is not None and task.name not in (warned or ()):
                if warned is not None:
                    warned.add(task.name)
                rank_zero_warn(
                    f"Task {task.name!r}: {sum(flags)} of {len(rows)} samples scored 0.0 "
                    f"because the reward failed (on_reward_error='zero'; counted in "
                    f"train/reward_errors/{task.name}; warned once per task). First error: "
                    f"{scores.first_error}"
                )
        r = torch.tensor(values, dtype=torch.float32)
        rewards[rows] = r
        correct[rows] = r >= task.success_threshold
        failed[rows] = torch.tensor(flags, dtype=torch.bool)
    return TaskScores(rewards, correct, failed)
