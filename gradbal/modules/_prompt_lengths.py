"""Prompt lengths checked before step 0: ``max_prompt_length`` and the model's positions.

A prompt longer than the model's position table fails inside the forward (GPT-2's learned
positions raise ``IndexError``) or silently runs far past what the model was trained on (RoPE).
:func:`check_prompt_lengths` tokenises every prompt of every task once, formatted exactly as the
module will tokenise it, and refuses what cannot fit, naming the task, the file and the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from transformers import PreTrainedTokenizerBase

from gradbal.modules._sequences import PromptFormat, format_prompts
from gradbal.tasks import Task, column_values

#: What happens to a prompt longer than ``max_prompt_length`` tokens: ``left`` keeps its last
#: ``max_prompt_length`` tokens (TRL's default, with a warning at setup), ``error`` refuses the
#: run at setup, naming the first such row.
PromptTruncation = Literal["left", "error"]

_POSITION_KEYS = ("n_positions", "max_position_embeddings")
_BATCH = 2048  # prompts formatted and tokenised per call


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence ``model`` declares (``n_positions`` / ``max_position_embeddings``).

    ``None`` when the config declares no limit, e.g. a custom model without one.

    Example::

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> max_positions(GPT2LMHeadModel(GPT2Config(n_positions=64, n_layer=1, n_embd=8, n_head=1)))
        64
        >>> max_positions(torch.nn.Linear(2, 2)) is None
        True
    """
    config = getattr(model, "config", None)
    for key in _POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_limits(max_prompt_length: int | None, truncation: str) -> None:
    """Raise ValueError for a ``max_prompt_length`` below 1 or an unknown ``truncation``."""
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(
            f"max_prompt_length must be >= 1 or null (no limit). Got {max_prompt_length}."
        )
    if truncation not in ("left", "error"):
        raise ValueError(f"prompt_truncation must be 'left' or 'error'. Got {truncation!r}.")


def prompt_token_counts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], prompt_format: PromptFormat
) -> list[int]:
    """Tokens of each prompt as :func:`~gradbal.modules._sequences.tokenize_prompts` makes them.

    Batched: a fast tokenizer's Rust backend encodes each batch of prompts in one call (what
    ``tokenizer(texts, add_special_tokens=False)`` does, without building Python id lists).
    """
    backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None
    counts: list[int] = []
    for start in range(0, len(prompts), _BATCH):
        texts = format_prompts(tokenizer, prompts[start : start + _BATCH], prompt_format)
        if backend is not None:
            counts.extend(len(e) for e in backend.encode_batch(texts, add_special_tokens=False))
        else:
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            counts.extend(len(x) for x in ids)
    return counts


def check_prompt_lengths(
    tasks: Sequence[Task],
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_format: PromptFormat,
    max_prompt_length: int | None,
    truncation: PromptTruncation,
    new_tokens: Mapping[str, tuple[str, int]],
    positions: int | None,
) -> None:
    """Refuse prompts that cannot fit, before step 0; warn about prompts that will be cut.

    Args:
        tasks: every task; both splits named in ``new_tokens`` are checked.
        tokenizer: the module's tokenizer.
        prompt_format: the module's ``prompt_format`` (chat templates count).
        max_prompt_length: the module's limit on prompt tokens, or ``None``.
        truncation: what the module does with longer prompts (:data:`PromptTruncation`).
        new_tokens: split -> (argument name, completion tokens), e.g.
            ``{"train": ("max_new_tokens", 64), "validation": ("val_max_new_tokens", 64)}``.
        positions: the model's maximum positions (:func:`max_positions`); ``None`` skips the
            check of prompt + completion against it.

    Raises:
        ValueError: a prompt over ``max_prompt_length`` with ``truncation="error"``, or a prompt
            (after truncation) plus its completion tokens over ``positions``.
    """
    for task in tasks:
        for split, (new_arg, new) in new_tokens.items():
            prompts = column_values(getattr(task, split), "prompt")
            counts = prompt_token_counts(tokenizer, prompts, prompt_format)
            longest = max(range(len(counts)), key=counts.__getitem__)
            over = [i for i, n in enumerate(counts) if max_prompt_length and n > max_prompt_length]
            if over:
                _too_long(task, split, counts, over, max_prompt_length or 0, truncation)
            kept = min(counts[longest], max_prompt_length or counts[longest])
            if positions is not None and kept + new > positions:
                cut = f", cut to {kept} by max_prompt_length" if kept < counts[longest] else ""
                fix = (
                    f"Set max_prompt_length: {positions - new} (longer prompts keep their last "
                    f"tokens), lower {new_arg}, or shorten that row."
                    if positions > new
                    else f"Lower {new_arg} below {positions}."
                )
                raise ValueError(
                    f"Task {task.name!r}: {task.row_location(split, longest)} has a prompt of "
                    f"{counts[longest]} tokens{cut}; with {new_arg}={new} a sequence needs up to "
                    f"{kept + new} positions, but the model has {positions} "
                    f"(config.max_position_embeddings / n_positions). {fix}"
                )


def _too_long(
    task: Task,
    split: str,
    counts: list[int],
    over: list[int],
    limit: int,
    truncation: PromptTruncation,
) -> None:
    first = over[0]
    where = f"{task.row_location(split, first)} ({counts[first]} tokens)"
    share = f"{len(over)} of {len(counts)} {split} prompts"
    if truncation == "error":
        raise ValueError(
            f"Task {task.name!r}: {where} is longer than max_prompt_length={limit} tokens "
            f"(prompt_truncation='error'; {share} are). Shorten or drop those rows, raise "
            f"max_prompt_length, or set prompt_truncation: left to keep each prompt's last "
            f"{limit} tokens."
        )
    rank_zero_warn(
        f"Task {task.name!r}: {share} are longer than max_prompt_length={limit} tokens and lose "
        f"their start (prompt_truncation='left'); the first is {where}. Set prompt_truncation: "
        f"error to refuse such rows instead."
    )
