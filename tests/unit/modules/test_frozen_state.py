"""Checkpoints without frozen weights: which entries are frozen, the fingerprint, the round trip."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch import nn

from gradbal.models import LoRA, PretrainedPolicy, TinyPolicy
from gradbal.modules._frozen_state import (
    FROZEN_KEY,
    FrozenWeightsError,
    drop_frozen_weights,
    fingerprint,
    frozen_names,
    keeps_frozen_weights,
    restore_frozen_weights,
)
from gradbal.resume import config_changes, run_id


class _Net(nn.Module):
    """A frozen embedding tied to a frozen head, a frozen BatchNorm, a trainable adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as SmolLM2's lm_head
        self.norm = nn.BatchNorm1d(4)
        self.adapter = nn.Linear(4, 4)
        self.adapter.register_buffer("scale", torch.ones(1))  # belongs to a trainable module
        self.register_buffer("steps", torch.zeros(1))  # a module with trainable parameters
        self.norm.register_buffer("cache", torch.ones(2), persistent=False)  # not in state dict
        self.embed.requires_grad_(False)
        self.norm.requires_grad_(False)


def _checkpoint(module: nn.Module) -> dict[str, Any]:
    return {"state_dict": module.state_dict(), "global_step": 3}


def _tiny_lora(seed: int = 0) -> nn.Module:
    model, _ = TinyPolicy(hidden_size=32, num_layers=1, seed=seed, lora=LoRA(r=4)).build()
    return model


def test_frozen_names_are_frozen_parameters_and_buffers_of_frozen_only_submodules() -> None:
    assert frozen_names(_Net()) == {
        "embed.weight",
        "head.weight",  # the tied name too: the state dict holds both
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    }


def test_under_lora_the_base_is_frozen_and_the_adapters_are_not() -> None:
    model = _tiny_lora()
    names = frozen_names(model)
    assert names and all("lora_" not in n for n in names)
    assert any(n.endswith("q_proj.base_layer.weight") for n in names)
    assert "base_model.model.model.embed_tokens.weight" in names
    trainable = model.state_dict().keys() - names
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def test_fingerprint_is_order_free_and_sees_every_name_dtype_shape_and_bit() -> None:
    base = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    fp = fingerprint(base)
    assert len(fp) == 32 and fp == fingerprint(dict(reversed(list(base.items()))))
    changed = {
        "name": {"c": base["a"], "b": base["b"]},
        "dtype": {"a": base["a"].double(), "b": base["b"]},
        "shape": {"a": base["a"].reshape(3, 2), "b": base["b"]},
        "value": {"a": base["a"].clone().index_fill_(1, torch.tensor([2]), 5.0), "b": base["b"]},
        "bit": {"a": base["a"], "b": base["b"].view(torch.int16).add(1).view(torch.bfloat16)},
    }
    for what, tensors in changed.items():
        assert fingerprint(tensors) != fp, what
    assert fingerprint({"a": base["a"].t().contiguous().t()}) == fingerprint({"a": base["a"]})


def test_drop_leaves_out_exactly_the_frozen_entries_with_a_plain_record() -> None:
    net = _Net()
    checkpoint = _checkpoint(net)
    drop_frozen_weights(net, checkpoint)
    assert set(checkpoint["state_dict"]) == {
        "steps",
        "adapter.weight",
        "adapter.bias",
        "adapter.scale",
    }
    record = checkpoint[FROZEN_KEY]
    assert record["names"] == 7 and record["hash"] == "xxh3_128"
    assert record["dtypes"] == {"float32": 20 + 20 + 4 * 4, "int64": 1}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)[FROZEN_KEY] == record  # plain values only


def test_nothing_frozen_leaves_the_checkpoint_unchanged() -> None:
    model, _ = TinyPolicy(hidden_size=32, num_layers=1).build()  # full fine-tuning
    checkpoint = _checkpoint(model)
    keys = list(checkpoint["state_dict"])
    drop_frozen_weights(model, checkpoint)
    assert list(checkpoint["state_dict"]) == keys and FROZEN_KEY not in checkpoint
    restore_frozen_weights(model, checkpoint)  # a full checkpoint: nothing to do
    assert list(checkpoint["state_dict"]) == keys


def test_a_state_dict_not_of_plain_tensors_is_kept_whole() -> None:
    net = _Net()
    checkpoint = {"state_dict": net.state_dict(keep_vars=True)}  # Parameters, as sharded types
    drop_frozen_weights(net, checkpoint)
    assert FROZEN_KEY not in checkpoint and "embed.weight" in checkpoint["state_dict"]


def test_restore_puts_the_rebuilt_frozen_weights_back_for_a_strict_load() -> None:
    saved = _tiny_lora()
    with torch.no_grad():
        for p in saved.parameters():
            if p.requires_grad:
                p.add_(1.0)  # "trained" adapters
    checkpoint = _checkpoint(saved)
    drop_frozen_weights(saved, checkpoint)
    fresh = _tiny_lora()  # rebuilt from the same seed
    restore_frozen_weights(fresh, checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    for (name, a), b in zip(saved.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_a_bf16_converted_model_loads_before_the_conversion() -> None:
    """``precision: bf16-true``: Lightning converts the module after it restores the checkpoint."""
    saved = _tiny_lora().to(torch.bfloat16)
    checkpoint = _checkpoint(saved)
    drop_frozen_weights(saved, checkpoint)
    assert checkpoint[FROZEN_KEY]["dtypes"] == {"bfloat16": 33056}
    with pytest.raises(FrozenWeightsError, match="K01"):
        restore_frozen_weights(_tiny_lora(seed=1), checkpoint)
    fresh = _tiny_lora()  # float32, as built
    restore_frozen_weights(fresh, checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    converted = fresh.to(torch.bfloat16).state_dict().values()
    for (name, a), b in zip(saved.state_dict().items(), converted, strict=True):
        assert torch.equal(a, b), name


def test_k01_other_frozen_weights_show_both_fingerprints_and_the_fix() -> None:
    checkpoint = _checkpoint(_tiny_lora(seed=0))
    drop_frozen_weights(_tiny_lora(seed=0), checkpoint)
    saved = checkpoint[FROZEN_KEY]["fingerprint"]
    other = _tiny_lora(seed=1)
    now = fingerprint({n: t for n, t in other.state_dict().items() if n in frozen_names(other)})
    with pytest.raises(FrozenWeightsError, match="K01") as error:
        restore_frozen_weights(other, checkpoint)
    message = str(error.value)
    assert saved in message and now in message and saved != now
    assert "save_frozen_weights=True" in message and "model the checkpoint was made with" in message


def test_k02_a_model_that_cannot_put_the_frozen_weights_back() -> None:
    checkpoint = _checkpoint(_tiny_lora())
    drop_frozen_weights(_tiny_lora(), checkpoint)
    full, _ = TinyPolicy(hidden_size=32, num_layers=1).build()  # LoRA removed: nothing frozen
    with pytest.raises(FrozenWeightsError, match=r"K02.* left out 12 frozen tensors .* has 0"):
        restore_frozen_weights(full, checkpoint)
    del checkpoint["state_dict"][
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    ]
    with pytest.raises(FrozenWeightsError, match=r"K02.*lacks 1 trainable entries.*q_proj"):
        restore_frozen_weights(_tiny_lora(), checkpoint)


def test_policies_rebuild_their_frozen_weights_other_sources_keep_them() -> None:
    assert not keeps_frozen_weights(TinyPolicy())
    assert not keeps_frozen_weights(PretrainedPolicy("some/model"))
    assert keeps_frozen_weights(PretrainedPolicy("some/model", save_frozen_weights=True))
    assert keeps_frozen_weights(object())  # a user's source: only its author knows


def test_the_option_changes_neither_the_run_id_nor_the_resume_summary() -> None:
    def config(**policy: Any) -> dict[str, Any]:
        init = {"model_name_or_path": "m", **policy}
        return {"model": {"init_args": {"policy": {"init_args": init}}}, "trainer": {}}

    before = config()  # a checkpoint made before the option existed
    for value in (False, True):
        assert run_id(config(save_frozen_weights=value)) == run_id(before)
        assert config_changes(before, config(save_frozen_weights=value)) == []
    assert run_id(config(model_name_or_path="other")) != run_id(before)
