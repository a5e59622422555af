"""Preference pairs as one sequence batch: B chosen rows, then B rejected rows, one forward.

Layout (see ``_sequences``): every prompt appears twice, left-padded to one length; row ``i`` is
pair ``i``'s chosen completion and row ``B + i`` its rejected one, each with eos appended. Keeping
the two completions in separate rows of one forward is what lets a gradient capture split the
update into its chosen and rejected parts (``PreferenceGradientMonitor``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from gradbal.modules._sequences import (
    PromptFormat,
    Sequences,
    completion_logprobs,
    encode_completions,
    format_prompts,
    join,
    tokenize_prompts,
)
from gradbal.objectives import masked_sum
from gradbal.tasks import prompt_messages


def preference_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    columns: Sequence[Mapping[str, Any]],
    prompt_format: PromptFormat,
) -> list[str]:
    """Prompt texts: conversational rows get the chat template over their prompt messages.

    Rows without ``prompt_messages``, or any row when the chat template is not used
    (``plain``, or ``auto`` without a template), are formatted as :func:`format_prompts` does.
    """
    texts = format_prompts(tokenizer, prompts, prompt_format)  # raises for chat w/o template
    if prompt_format == "plain" or not getattr(tokenizer, "chat_template", None):
        return texts  # no chat template in use: the plain rendering stands
    for i, row in enumerate(columns):
        messages = prompt_messages(row)
        if messages is not None:
            texts[i] = str(
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
    return texts


def pair_sequences(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    columns: Sequence[Mapping[str, Any]],
    device: torch.device,
    *,
    prompt_format: PromptFormat,
    max_prompt_length: int | None,
    max_completion_length: int | None,
) -> Sequences:
    """``[2B, P + C]`` sequences: chosen completions in rows ``:B``, rejected in rows ``B:``.

    Over-long prompts keep their last ``max_prompt_length`` tokens; completions (eos included)
    keep their first ``max_completion_length`` tokens.
    """
    missing = [i for i, row in enumerate(columns) if "chosen" not in row or "rejected" not in row]
    if missing:
        raise ValueError(
            f"Rows {missing[:5]} of the batch have no 'chosen'/'rejected' columns (got keys "
            f"{sorted(columns[missing[0]])}). Train DPOModule on preference tasks only."
        )
    texts = preference_prompts(tokenizer, prompts, columns, prompt_format)
    ids, mask = tokenize_prompts(tokenizer, texts, max_prompt_length, device)  # [B, P]
    completions = [str(r["chosen"]) for r in columns] + [str(r["rejected"]) for r in columns]
    completion_ids, completion_mask = encode_completions(tokenizer, completions, device)
    if max_completion_length is not None:
        completion_ids = completion_ids[:, :max_completion_length]  # [2B, C]
        completion_mask = completion_mask[:, :max_completion_length]  # [2B, C]
    return join(ids.repeat(2, 1), mask.repeat(2, 1), completion_ids, completion_mask)


def sequence_logps(model: torch.nn.Module, seqs: Sequences) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs ``[N]`` (in the graph if grad is on) and token counts ``[N]``."""
    token_logps = completion_logprobs(model, seqs)  # [N, C]
    lengths = seqs.completion_mask.sum(dim=1)  # [N]
    return masked_sum(token_logps, seqs.completion_mask, dim=1), lengths
