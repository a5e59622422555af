"""Sampling completions from the policy, and scoring them with each task's reward."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from gradbal.nonfinite_loss import nonfinite_logits_error
from gradbal.tasks import OnRewardError, Task, score, score_or_zero

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads nearby seeds apart


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
    ``seed=None``: the body uses the global RNG.

    Example::

        >>> with step_rng(7, step=3, rank=0):
        ...     a = torch.rand(2)
        >>> with step_rng(7, step=3, rank=0):
        ...     b = torch.rand(2)
        >>> bool((a == b).all())
        True
    """
    if seed is None:
        yield
        return
    on_cuda = device is not None and device.type == "cuda"
    mixed = (seed * _MIX + step * 1_000_003 + rank * 7919 + micro_batch * 15_485_863) % (2**63 - 1)
    with torch.random.fork_rng(devices=[device] if on_cuda else []):
        torch.manual_seed(mixed)
        yield


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
    share_prefill: bool = True,
    nonfinite_error: Callable[[], Exception] | None = None,
) -> Tensor:
    """Completion token ids ``[B * num_return_sequences, C]`` (prompt columns stripped).

    Rows are grouped by prompt: rows ``i*G .. i*G+G-1`` are prompt ``i``'s completions. The model
    is put in eval mode while it generates (no dropout), then restored. ``share_prefill``:
    encode each prompt once, not once per completion (same tokens, less work; used for
    decoder-only models with a full-attention KV cache, see :func:`_shared_prefill`).
    ``nonfinite_error``: builds the exception raised when the next-token logits hold NaN or
    +inf (diverged weights), before ``torch.multinomial`` fails on them with a message that
    names no cause; default :func:`~gradbal.nonfinite_loss.nonfinite_logits_error`.
    """
    was_training = model.training
    model.eval()
    try:
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or 0}
            if do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        ids, mask = prompt_ids, prompt_mask
        extra: dict[str, Any] = {}
        if share_prefill and num_return_sequences > 1 and _can_share_prefill(model, prompt_ids):
            try:
                ids, mask, extra = _shared_prefill(
                    model, prompt_ids, prompt_mask, num_return_sequences
                )
            except TypeError:  # a custom model whose forward takes no `cache`/`logits_to_keep`
                ids, mask, extra = prompt_ids, prompt_mask, {}
        check = _FiniteLogits(nonfinite_error or (lambda: nonfinite_logits_error(None, "sampling")))
        out = model.generate(  # type: ignore[operator]
            input_ids=ids,
            logits_processor=LogitsProcessorList([check]),
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_return_sequences=1 if extra else num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **extra,
            **sampling,
        )
    finally:
        model.train(was_training)
    return out[:, prompt_ids.shape[1] :]


class _FiniteLogits(LogitsProcessor):
    """Raise ``error()`` if a row of next-token scores has a NaN, a +inf, or nothing finite."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = (
            torch.isnan(scores).any()
            | torch.isposinf(scores).any()
            | torch.isneginf(scores).all(dim=-1).any()
        )
        if bool(bad):  # one host sync per token; generate already syncs per token
            raise self.error()
        return scores


def _cache_argument(model: torch.nn.Module) -> str | None:
    """The name the model's ``forward`` and ``generate`` take a KV cache by, if any.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (5.17 still takes
    ``past_key_values`` and rejects ``cache`` in ``generate``); a custom model may take neither.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _can_share_prefill(model: torch.nn.Module, prompt_ids: Tensor) -> bool:
    """A decoder-only model with a plain (full-attention) KV cache and prompts of > 1 token."""
    config = getattr(model, "config", None)
    return (
        prompt_ids.shape[1] > 1
        and _cache_argument(model) is not None
        and config is not None
        and not getattr(config, "is_encoder_decoder", False)
        and getattr(config, "sliding_window", None) is None
        and set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
    )


def _shared_prefill(
    model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, g: int
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Encode each prompt once (all but its last token) and repeat its KV cache ``g`` times.

    ``generate`` with ``num_return_sequences=g`` repeats every prompt ``g`` times before the
    prefill, so the prompt is encoded ``g`` times. Here the first ``P - 1`` tokens are encoded
    once per prompt; ``generate`` then continues from the cache with the repeated prompts and
    feeds only the last prompt token, sampling exactly what it would have sampled otherwise.
    """
    head_ids, head_mask = prompt_ids[:, :-1], prompt_mask[:, :-1]
    cache = DynamicCache(config=getattr(model, "config", None))
    name = _cache_argument(model) or "cache"
    model(
        input_ids=head_ids,
        attention_mask=head_mask,
        position_ids=(head_mask.long().cumsum(1) - 1).clamp_min(0),
        use_cache=True,
        logits_to_keep=1,
        **{name: cache},
    )
    cache.batch_repeat_interleave(g)
    ids = prompt_ids.repeat_interleave(g, 0)
    mask = prompt_mask.repeat_interleave(g, 0)
    return ids, mask, {name: cache}


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
