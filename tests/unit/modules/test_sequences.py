"""Sequence layout: eos masks, left padding that does not change scores, chat formatting."""

from __future__ import annotations

import pytest
import torch

from gradbal.models import TinyPolicy
from gradbal.modules._sequences import (
    completion_logprobs,
    completion_mask,
    encode_completions,
    format_prompts,
    join,
    tokenize_prompts,
)


def test_completion_mask_stops_after_first_eos_and_flags_truncation() -> None:
    """eos=2: row 0 ends at position 1, row 1 never ends (truncated), row 2 ends at once."""
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    mask, truncated = completion_mask(ids, eos_token_id=2)
    assert mask.tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    assert truncated.tolist() == [False, True, False]


def test_left_padding_does_not_change_completion_logprobs() -> None:
    """The same prompt+answer scored alone and beside a longer prompt gives equal log-probs."""
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=3).build()
    model.eval()
    dev = torch.device("cpu")
    answers = ["46", "46"]
    alone_ids, alone_mask = tokenize_prompts(tok, ["add 12+34="], None, dev)
    a_ids, a_mask = encode_completions(tok, answers[:1], dev)
    alone = completion_logprobs(model, join(alone_ids, alone_mask, a_ids, a_mask))
    ids, mask = tokenize_prompts(tok, ["add 12+34=", "a much longer prompt: add 12+34="], None, dev)
    c_ids, c_mask = encode_completions(tok, answers, dev)
    batch = completion_logprobs(model, join(ids, mask, c_ids, c_mask))
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)


def test_completion_logprobs_match_a_plain_forward() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1, seed=1).build()
    model.eval()
    dev = torch.device("cpu")
    ids, mask = tokenize_prompts(tok, ["rev abc="], None, dev)
    c_ids, c_mask = encode_completions(tok, ["cba"], dev)
    seqs = join(ids, mask, c_ids, c_mask)
    logits = model(seqs.input_ids).logits.log_softmax(-1)
    p = seqs.prompt_length
    expected = logits[0, p - 1 : -1].gather(-1, seqs.input_ids[0, p:, None]).squeeze(-1)
    torch.testing.assert_close(completion_logprobs(model, seqs)[0], expected, atol=1e-5, rtol=1e-5)


def test_temperature_scales_logits() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    dev = torch.device("cpu")
    ids, mask = tokenize_prompts(tok, ["x"], None, dev)
    c_ids, c_mask = encode_completions(tok, ["y"], dev)
    seqs = join(ids, mask, c_ids, c_mask)
    assert not torch.allclose(
        completion_logprobs(model, seqs, 1.0), completion_logprobs(model, seqs, 0.5)
    )


def test_max_prompt_length_keeps_the_end() -> None:
    _, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    ids, _ = tokenize_prompts(tok, ["abcdef"], 3, torch.device("cpu"))
    assert tok.decode(ids[0].tolist()) == "def"


def test_chat_format_needs_a_template() -> None:
    _, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    assert format_prompts(tok, ["hi"], "auto") == ["hi"]
    with pytest.raises(ValueError, match="no chat template"):
        format_prompts(tok, ["hi"], "chat")
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    )
    assert format_prompts(tok, ["hi"], "auto") == ["<user>hi<assistant>"]
