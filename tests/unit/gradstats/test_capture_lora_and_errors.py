"""TaskGradCapture with peft LoRA (trainable adapters, frozen base weights) and its error paths."""

from __future__ import annotations

import pytest
import torch
from _gradstats_helpers import batch, brute_force_shares, gram_of, row_losses, tiny_model
from peft import LoraConfig, get_peft_model
from torch import nn

from gradbal.gradstats import TaskGradCapture

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

SEGMENTS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def _lora_llama() -> nn.Module:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(tiny_model("llama"), config)
    with torch.no_grad():  # lora_B starts at zero; make the adapters non-trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    return model


def _run(capture: TaskGradCapture, model: nn.Module, input_ids: torch.Tensor) -> None:
    with capture:
        capture.set_segments(SEGMENTS, 4)
        row_losses(model, input_ids).sum().backward()


def _check(capture: TaskGradCapture, expected: dict[str, torch.Tensor]) -> None:
    captured = capture.segment_grads()
    assert set(captured) == set(expected)
    for name, share in captured.items():
        torch.testing.assert_close(share, expected[name], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(capture.gram(), gram_of(expected), rtol=1e-5, atol=1e-12)


def test_lora_trainable_measures_the_adapters() -> None:
    model, input_ids = _lora_llama(), batch(8)
    capture = TaskGradCapture(model, "trainable")
    assert capture.measured_layers and all("lora_" in n for n in capture.measured_layers)
    _run(capture, model, input_ids)
    _check(capture, brute_force_shares(model, [(input_ids, SEGMENTS)], 4, capture.measured_params))


def test_lora_frozen_base_weights_are_measured_with_include_frozen() -> None:
    model, input_ids = _lora_llama(), batch(8)
    capture = TaskGradCapture(model, "last_attention_block", include_frozen=True)
    prefix = "base_model.model.model.layers.1.self_attn."
    assert {prefix + "q_proj.base_layer.weight", prefix + "k_proj.weight"} <= set(
        capture.measured_params
    )
    _run(capture, model, input_ids)
    for p in model.parameters():  # the brute force needs requires_grad on the frozen weights
        p.requires_grad_(True)
    _check(capture, brute_force_shares(model, [(input_ids, SEGMENTS)], 4, capture.measured_params))


def test_frozen_layers_are_reported_as_skipped() -> None:
    capture = TaskGradCapture(_lora_llama(), "last_attention_block")
    prefix = "base_model.model.model.layers.1.self_attn."
    assert "include_frozen=True" in capture.skipped[prefix + "k_proj"]
    assert "include_frozen=True" in capture.skipped[prefix + "q_proj.base_layer"]
    assert prefix + "q_proj.lora_A.default" in capture.measured_layers


def test_unsupported_layers_are_reported_by_name() -> None:
    capture = TaskGradCapture(tiny_model("llama"), "last_block")
    assert set(capture.skipped) == {
        "model.layers.1.input_layernorm",
        "model.layers.1.post_attention_layernorm",
    }
    assert all("LlamaRMSNorm is not a supported layer type" in r for r in capture.skipped.values())
    embedding = nn.Sequential(nn.Embedding(5, 3, scale_grad_by_freq=True), nn.Linear(3, 2))
    assert "scale_grad_by_freq" in TaskGradCapture(embedding, r".").skipped["0"]


def test_selection_without_measurable_layers_raises() -> None:
    with pytest.raises(ValueError, match=r"no measurable layer.*norm"):
        TaskGradCapture(tiny_model("llama"), r"layers\.1\..*norm")
    with pytest.raises(ValueError, match="selects no module"):
        TaskGradCapture(tiny_model("llama"), r"no_such_module")


def test_position_embedding_without_batch_rows_is_dropped_with_a_warning() -> None:
    """GPT-2's wpe sees position ids [1, T]: its gradient cannot be split by row."""
    model, input_ids = tiny_model("gpt2"), batch(8)
    capture = TaskGradCapture(model, r"wpe|h\.1\.attn\.c_proj")
    with pytest.warns(UserWarning, match=r"transformer\.wpe.*leading dimension 1"):
        _run(capture, model, input_ids)
    assert "transformer.wpe" in capture.skipped
    assert capture.measured_layers == ["transformer.h.1.attn.c_proj"]
    _check(capture, brute_force_shares(model, [(input_ids, SEGMENTS)], 4, capture.measured_params))


def test_layer_whose_output_needs_no_grad_warns() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    capture = TaskGradCapture(model, r"^0$", include_frozen=True)  # input is data: no grad path
    with capture, pytest.warns(UserWarning, match="output does not require grad"):
        capture.set_segments(torch.tensor([0, 1]), 2)
        model(torch.randn(2, 3)).sum().backward()


def test_backward_without_segments_raises() -> None:
    model = nn.Sequential(nn.Linear(3, 1))
    with TaskGradCapture(model, r"0"), pytest.raises(RuntimeError, match="set_segments"):
        model(torch.randn(2, 3)).sum().backward()


def test_bad_segments_raise() -> None:
    capture = TaskGradCapture(nn.Sequential(nn.Linear(3, 1)), r"0")
    with pytest.raises(ValueError, match=r"in \[-1, 2\)"):
        capture.set_segments(torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="LongTensor"):
        capture.set_segments(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="two segments"):
        capture.set_segments(torch.tensor([0, 1]), 2, group_ids=torch.tensor([4, 4]))
    capture.set_segments(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="reset"):
        capture.set_segments(torch.tensor([0, 1]), 4)


def test_rows_mismatch_is_dropped_with_a_warning() -> None:
    model = nn.Sequential(nn.Linear(3, 1))
    capture = TaskGradCapture(model, r"0")
    with capture, pytest.warns(UserWarning, match="leading dimension 3"):
        capture.set_segments(torch.tensor([0, 1]), 2)
        model(torch.randn(3, 3)).sum().backward()
    assert "0" in capture.skipped and capture.segment_grads() == {}
