"""Preference batches as one forward: row layout, truncation, chat templates, reference table."""

from __future__ import annotations

import json

import pytest
import torch

from gradbal.models import byte_level_tokenizer
from gradbal.modules._preference_data import pair_sequences, preference_prompts
from gradbal.modules._reference_logps import REF_CHOSEN, REF_REJECTED, ReferenceTable

CPU = torch.device("cpu")
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_chosen_rows_then_rejected_rows_with_shared_prompts() -> None:
    tok = byte_level_tokenizer()
    columns = [{"chosen": "46", "rejected": "45"}, {"chosen": "{ab:1}", "rejected": "{ab:1"}]
    seqs = pair_sequences(
        tok, ["add 12+34=", "rec ab 1="], columns, CPU, prompt_format="auto",
        max_prompt_length=None, max_completion_length=None,
    )  # fmt: skip
    assert seqs.input_ids.shape[0] == 4
    p = seqs.prompt_length
    assert torch.equal(seqs.input_ids[:2, :p], seqs.input_ids[2:, :p])  # same prompts twice
    completions = [
        tok.decode(row[m])
        for row, m in zip(seqs.input_ids[:, p:], seqs.completion_mask, strict=True)
    ]
    assert completions == ["46<eos>", "{ab:1}<eos>", "45<eos>", "{ab:1<eos>"]


def test_truncation_keeps_prompt_end_and_completion_start() -> None:
    tok = byte_level_tokenizer()
    seqs = pair_sequences(
        tok, ["long prompt: add 1+2="], [{"chosen": "3333", "rejected": "4"}], CPU,
        prompt_format="plain", max_prompt_length=4, max_completion_length=2,
    )  # fmt: skip
    assert tok.decode(seqs.input_ids[0, : seqs.prompt_length]) == "1+2="
    assert seqs.completion_mask.tolist() == [[True, True], [True, True]]  # "33", "4<eos>"


def test_chat_template_applies_to_prompt_messages() -> None:
    tok = byte_level_tokenizer()
    tok.chat_template = TEMPLATE
    messages = [{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}]
    columns = [{"prompt_messages": json.dumps(messages)}, {}]
    texts = preference_prompts(tok, ["(rendered)", "plain"], columns, "auto")
    assert texts == ["<system>brief\n<user>hi\n<assistant>", "<user>plain\n<assistant>"]
    assert preference_prompts(tok, ["(rendered)"], columns[:1], "plain") == ["(rendered)"]


def test_missing_preference_columns_are_reported() -> None:
    with pytest.raises(ValueError, match="no 'chosen'/'rejected'"):
        pair_sequences(
            byte_level_tokenizer(), ["q"], [{"target": 3}], CPU, prompt_format="auto",
            max_prompt_length=None, max_completion_length=None,
        )  # fmt: skip


def test_reference_table_prefers_row_columns_and_reports_unknown_pairs() -> None:
    table = ReferenceTable()
    row = {"chosen": "a", "rejected": "b"}
    own = {**row, REF_CHOSEN: -1.0, REF_REJECTED: -2.0}
    assert [t.tolist() for t in table.lookup([0], ["p"], [own])] == [[-1.0], [-2.0]]
    with pytest.raises(KeyError, match="No precomputed reference"):
        table.lookup([0], ["p"], [row])
