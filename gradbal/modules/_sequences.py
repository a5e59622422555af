"""Prompt formatting, tokenisation and the prompt+completion layout shared by every module.

Layout of every sequence batch: ``[pad ... pad | prompt | completion | pad ... pad]``: prompts are
left-padded to one length P (as batched generation needs), completions start at column P and
are right-padded to length C. Position ids follow the attention mask, so a sequence scores the
same under generation and under the training forward whatever its padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedTokenizerBase

from gradbal.models.kv_cache import activation_checkpointing, cache_argument, can_share_prefix
from gradbal.objectives import token_logprobs

PromptFormat = Literal["auto", "plain", "chat"]


class Sequences(NamedTuple):
    """A tokenised prompt+completion batch.

    Attributes:
        input_ids: ``[N, P + C]``.
        attention_mask: ``[N, P + C]`` 1 on real tokens.
        completion_mask: ``[N, C]`` bool, the completion tokens that count (up to and
            including the first eos).
        prompt_length: P.
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    prompt_length: int


def format_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], prompt_format: PromptFormat
) -> list[str]:
    """Apply the tokenizer's chat template (``chat``, or ``auto`` when it has one) or keep text."""
    use_chat = prompt_format == "chat" or (
        prompt_format == "auto" and getattr(tokenizer, "chat_template", None)
    )
    if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "prompt_format='chat' but the tokenizer has no chat template. Use "
            "prompt_format='plain' (or 'auto'), or load a tokenizer that defines one."
        )
    if not use_chat:
        return list(prompts)
    return [
        str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
        )
        for p in prompts
    ]


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_prompt_length: int | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Left-padded ``input_ids, attention_mask`` ``[B, P]``; over-long prompts keep their end."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_length is not None:
        ids = [x[-max_prompt_length:] for x in ids]
    if min(len(x) for x in ids) == 0:
        raise ValueError("A prompt tokenised to zero tokens; every prompt needs some text.")
    return left_pad(ids, tokenizer.pad_token_id, device)


def left_pad(
    ids: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        if x:
            input_ids[i, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            mask[i, width - len(x) :] = 1
    return input_ids.to(device), mask.to(device)


def completion_mask(completion_ids: Tensor, eos_token_id: int | None) -> tuple[Tensor, Tensor]:
    """Mask ``[N, C]`` of tokens up to and including the first eos, and ``[N]`` truncated flags.

    A completion with no eos was cut by ``max_new_tokens``: it is flagged truncated.
    """
    n, c = completion_ids.shape
    if eos_token_id is None:
        return torch.ones_like(completion_ids, dtype=torch.bool), torch.ones(
            n, dtype=torch.bool, device=completion_ids.device
        )
    is_eos = completion_ids == eos_token_id  # [N, C]
    has_eos = is_eos.any(dim=1)  # [N]
    first = torch.where(
        has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, c, dtype=torch.long)
    )
    positions = torch.arange(c, device=completion_ids.device).expand(n, c)  # [N, C]
    return positions <= first.unsqueeze(1), ~has_eos


def join(
    prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, mask: Tensor
) -> Sequences:
    """Concatenate left-padded prompts with completions (tokens after the first eos become pad)."""
    return Sequences(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, mask.long()], dim=1),
        completion_mask=mask,
        prompt_length=prompt_ids.shape[1],
    )


def encode_completions(
    tokenizer: PreTrainedTokenizerBase, completions: Sequence[str], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-padded completion ids ``[N, C]`` with eos appended, and their mask."""
    eos = tokenizer.eos_token_id
    ids = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        for c in completions
    ]
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = True
    return out.to(device), mask.to(device)


def completion_logprobs(
    model: torch.nn.Module, seqs: Sequences, temperature: float = 1.0, group_size: int = 1
) -> Tensor:
    """Log-probabilities ``[N, C]`` (fp32) of each completion token under ``model``.

    Only the last ``C + 1`` positions' logits are materialised (``logits_to_keep``): the prompt
    positions' ``[N, P, V]`` logits are never built, which cuts peak memory for long prompts.

    ``group_size`` ``G > 1``: rows come in groups of ``G`` completions of one prompt (rows
    ``i*G .. i*G+G-1``, GRPO's layout). Each prompt is then encoded once and its KV cache repeated
    for its ``G`` completions (:func:`shared_prompt_logprobs`), the same values up to float
    rounding with about ``(G - 1) / G`` of the prompt tokens' forward and backward work saved.
    The full forward is used instead where that cannot be done exactly: a model without a plain
    KV cache, activation checkpointing in a forward with gradient (it drops the cache; the
    no-grad reference and old-policy forwards still share), prompts that differ within a group,
    or ``C < 2``.
    """
    c = seqs.completion_mask.shape[1]
    if group_size > 1 and _can_share_prompts(model, seqs, group_size):
        return shared_prompt_logprobs(model, seqs, group_size, temperature)
    position_ids = (seqs.attention_mask.cumsum(dim=1) - 1).clamp_min(0)  # [N, P+C]
    out = model(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=position_ids,
        logits_to_keep=c + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :]  # [N, C, V] predicts completion tokens
    labels = seqs.input_ids[:, seqs.prompt_length :]  # [N, C]
    return _label_logprobs(logits, labels, temperature)


def _label_logprobs(logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """``[N, T]`` fp32 log-probs of ``labels`` under ``logits`` ``[N, T, V]`` at ``temperature``."""
    if temperature != 1.0:
        logits = logits / temperature
    # ~4M logit elements per chunk: bounded fp32 upcast, few kernel launches for small vocabs.
    chunk = max(1, (1 << 22) // max(1, logits.shape[1] * logits.shape[2]))
    return token_logprobs(logits, labels, chunk_size=chunk, ignore_index=None)


def _can_share_prompts(model: torch.nn.Module, seqs: Sequences, group_size: int) -> bool:
    n, p = seqs.input_ids.shape[0], seqs.prompt_length
    if n % group_size or seqs.completion_mask.shape[1] < 2:
        return False
    if not can_share_prefix(model, p):
        return False
    # checkpointed layers drop the cache only when they will replay: training, with grad
    if torch.is_grad_enabled() and model.training and activation_checkpointing(model):
        return False
    prompts = seqs.input_ids[:, :p].view(n // group_size, group_size, p)  # [B, G, P]
    masks = seqs.attention_mask[:, :p].view(n // group_size, group_size, p)
    return bool((prompts == prompts[:, :1]).all()) and bool((masks == masks[:, :1]).all())


def shared_prompt_logprobs(
    model: torch.nn.Module, seqs: Sequences, group_size: int, temperature: float = 1.0
) -> Tensor:
    """:func:`completion_logprobs` with each group's prompt encoded once (see there).

    Two forwards: the ``B = N / G`` prompts ``[B, P]`` with a KV cache (keeping only the last
    position's logits, which predict each completion's first token), then the ``N`` completions
    without their last token ``[N, C - 1]`` continuing from the cache repeated ``G`` times
    (``repeat_interleave`` is differentiable: the prompt rows get the gradient of all ``G``
    completions). Position ids and the attention mask are the full sequences', so every token
    sees exactly what it sees in the one-pass forward. A gradient capture sees the prompt
    forward's layers called with one row per group (see ``TaskGradCapture``).
    """
    p = seqs.prompt_length
    position_ids = (seqs.attention_mask.cumsum(dim=1) - 1).clamp_min(0)  # [N, P+C]
    name = cache_argument(model) or "cache"
    cache = DynamicCache(config=getattr(model, "config", None))
    head = model(
        input_ids=seqs.input_ids[::group_size, :p],  # [B, P]
        attention_mask=seqs.attention_mask[::group_size, :p],
        position_ids=position_ids[::group_size, :p],
        logits_to_keep=1,
        use_cache=True,
        **{name: cache},
    )
    cache.batch_repeat_interleave(group_size)
    tail = model(
        input_ids=seqs.input_ids[:, p:-1],  # [N, C-1]: the last token predicts nothing we need
        attention_mask=seqs.attention_mask[:, :-1],  # [N, P+C-1]
        position_ids=position_ids[:, p:-1],
        use_cache=True,
        **{name: cache},
    )
    labels = seqs.input_ids[:, p:]  # [N, C]
    first = _label_logprobs(
        head.logits[:, -1:, :].repeat_interleave(group_size, 0), labels[:, :1], temperature
    )  # [N, 1]
    rest = _label_logprobs(tail.logits, labels[:, 1:], temperature)  # [N, C-1]
    return torch.cat([first, rest], dim=1)
