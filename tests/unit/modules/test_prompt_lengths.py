"""Prompt lengths measured at setup as training tokenises them; limits of the model's positions."""

from __future__ import annotations

import types
from typing import Literal

import pytest
import torch
from datasets import Dataset

from gradbal.models import TinyPolicy
from gradbal.modules._prompt_lengths import check_prompt_lengths, max_positions, prompt_token_counts
from gradbal.modules._sequences import format_prompts, tokenize_prompts
from gradbal.tasks import ExactMatch, Task

NEW = {"train": ("max_new_tokens", 8), "validation": ("val_max_new_tokens", 8)}


def _task(prompts: list[str]) -> Task:
    split = Dataset.from_dict({"prompt": prompts, "answer": ["1"] * len(prompts)})
    return Task("qa", train=split, validation=split, reward=ExactMatch())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_max_positions_of_config_built_models(family: Literal["gpt2", "llama"]) -> None:
    model, _ = TinyPolicy(
        family=family, hidden_size=32, num_layers=1, max_position_embeddings=48
    ).build()
    assert max_positions(model) == 48


def test_a_model_that_declares_no_limit_is_not_checked() -> None:
    model = torch.nn.Linear(2, 2)
    model.config = types.SimpleNamespace(max_position_embeddings=None)  # type: ignore[assignment]
    assert max_positions(model) is None
    _, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    check_prompt_lengths(
        [_task(["x" * 5000])],
        tokenizer,
        prompt_format="auto",
        max_prompt_length=None,
        truncation="error",
        new_tokens=NEW,
        positions=None,
    )


def test_counts_include_the_chat_template_as_training_tokenises_it() -> None:
    _, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    tokenizer.chat_template = "<user>{{ messages[0]['content'] }}</user><assistant>"
    prompts = ["hi", "a longer prompt", "x" * 40]
    counts = prompt_token_counts(tokenizer, prompts, "auto")
    assert counts == [len(p) + len("<user></user><assistant>") for p in prompts]
    for prompt, count in zip(prompts, counts, strict=True):
        ids, _ = tokenize_prompts(
            tokenizer, format_prompts(tokenizer, [prompt], "auto"), None, torch.device("cpu")
        )
        assert ids.shape[1] == count
    assert prompt_token_counts(tokenizer, prompts, "plain") == [len(p) for p in prompts]


def test_left_truncation_keeps_the_end_and_fits_the_positions() -> None:
    _, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    prompt = "s" * 100 + "the question?"
    with pytest.warns(UserWarning, match="lose their start"):
        check_prompt_lengths(
            [_task([prompt, "ok"])],
            tokenizer,
            prompt_format="plain",
            max_prompt_length=20,
            truncation="left",
            new_tokens=NEW,
            positions=28,
        )  # 20 + 8 fits 28
    ids, _ = tokenize_prompts(tokenizer, [prompt], 20, torch.device("cpu"))
    assert tokenizer.decode(ids[0]) == prompt[-20:]


def test_validation_split_is_checked_with_val_max_new_tokens() -> None:
    _, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    train = Dataset.from_dict({"prompt": ["short"], "answer": ["1"]})
    val = Dataset.from_dict({"prompt": ["short", "y" * 30], "answer": ["1", "2"]})
    task = Task("qa", train=train, validation=val, reward=ExactMatch())
    new = {"train": ("max_new_tokens", 8), "validation": ("val_max_new_tokens", 20)}
    with pytest.raises(ValueError, match=r"row 2 of the validation split .* val_max_new_tokens=20"):
        check_prompt_lengths(
            [task],
            tokenizer,
            prompt_format="plain",
            max_prompt_length=None,
            truncation="left",
            new_tokens=new,
            positions=40,
        )
