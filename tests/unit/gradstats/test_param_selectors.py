"""Selections: last attention block / last block found by name in every model family and wrapper."""

from __future__ import annotations

import pytest
from _gradstats_helpers import tiny_model
from peft import LoraConfig, get_peft_model
from torch import nn

from gradbal.gradstats import last_attention_block, last_decoder_layer, select_modules

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("llama", "model.layers.1.self_attn"),
        ("qwen2", "model.layers.1.self_attn"),
        ("gpt2", "transformer.h.1.attn"),
    ],
)
def test_last_attention_block(family: str, expected: str) -> None:
    assert last_attention_block(tiny_model(family))[0] == expected


def test_last_attention_block_through_peft() -> None:
    model = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    assert last_attention_block(model)[0] == "base_model.model.model.layers.1.self_attn"


def test_models_without_decoder_layers_raise_with_a_fix() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        last_decoder_layer(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="no attention child"):
        last_attention_block(
            nn.Sequential(nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(2, 2)])}))
        )


def test_trainable_and_regex() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    assert [n for n, _ in select_modules(model, "trainable")] == ["1", "2"]
    with pytest.raises(ValueError, match="valid regular expression"):
        select_modules(model, "(")
