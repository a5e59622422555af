"""Reference policies chosen by class_path, shared by GRPO and DPO: which model scores the
reference, what each one keeps in memory, and the errors that say what to use instead."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser

from gradbal.models import LoRA, TinyPolicy
from gradbal.modules import (
    AdapterDisabled,
    DPOModule,
    FrozenCopy,
    GRPOModule,
    InitialPolicy,
    Precomputed,
    Reference,
)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(3, 11).view(1, -1)
    return model(input_ids=ids).logits


def _perturb_trainable(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)


@pytest.mark.parametrize("lora", [None, LoRA(r=2)])
def test_initial_policy_copies_only_without_adapters(lora: LoRA | None) -> None:
    model, _ = TinyPolicy(hidden_size=32, num_layers=1, lora=lora, seed=0).build()
    start = _logits(model).detach()
    ref = InitialPolicy().frozen_copy(model)
    assert (ref is None) == (lora is not None)
    if ref is not None:
        assert not any(p.requires_grad for p in ref.parameters())
    _perturb_trainable(model)
    assert not torch.allclose(_logits(model), start)
    with InitialPolicy().scoring(model, ref) as scorer:
        torch.testing.assert_close(_logits(scorer), start)  # the initial policy's outputs
        assert not torch.is_grad_enabled()


def test_frozen_copy_under_lora_keeps_the_initial_adapters() -> None:
    model, _ = TinyPolicy(hidden_size=32, num_layers=1, lora=LoRA(r=2), seed=0).build()
    _perturb_trainable(model)  # adapters that are not the identity: loaded from a previous run
    with_adapters = _logits(model).detach()
    ref = FrozenCopy().frozen_copy(model)
    assert ref is not None
    _perturb_trainable(model)  # training moves on
    with FrozenCopy().scoring(model, ref) as scorer:
        torch.testing.assert_close(_logits(scorer), with_adapters)
    with AdapterDisabled().scoring(model, AdapterDisabled().frozen_copy(model)) as scorer:
        assert not torch.allclose(_logits(scorer), with_adapters)  # the base, adapters off


def test_adapter_disabled_refuses_a_model_without_adapters() -> None:
    model, _ = TinyPolicy(hidden_size=32, num_layers=1, seed=0).build()
    with pytest.raises(ValueError, match="needs a PEFT policy"):
        AdapterDisabled().frozen_copy(model)
    with pytest.raises(RuntimeError, match="FrozenCopy"), Reference().scoring(model, None):
        pass


def test_grpo_refuses_a_precomputed_reference() -> None:
    with pytest.raises(ValueError, match="cannot be scored in advance"):
        GRPOModule(TinyPolicy(hidden_size=32, num_layers=1), beta=0.1, reference=Precomputed())


def test_grpo_builds_the_chosen_reference_at_configure_model() -> None:
    tiny = TinyPolicy(hidden_size=32, num_layers=1, lora=LoRA(r=2))
    module = GRPOModule(tiny, beta=0.1, reference=FrozenCopy())
    module.configure_model()
    assert module.ref_model is not None
    default = GRPOModule(tiny, beta=0.1)
    default.configure_model()
    assert default.ref_model is None  # InitialPolicy under LoRA: the base, no copy


def test_dpo_string_shortcuts_map_to_the_strategies() -> None:
    tiny = TinyPolicy(hidden_size=32, num_layers=1)
    assert isinstance(DPOModule(tiny, reference="model").reference, InitialPolicy)
    pre = DPOModule(tiny, reference="precomputed", reference_cache_dir="x", reference_batch_size=4)
    assert isinstance(pre.reference, Precomputed)
    assert (pre.reference.cache_dir, pre.reference.batch_size) == ("x", 4)
    with pytest.raises(ValueError, match="only applies to"):
        DPOModule(tiny, reference=FrozenCopy(), reference_cache_dir="x")
    with pytest.raises(ValueError, match="reference must be"):
        DPOModule(tiny, reference="copy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        Precomputed(batch_size=0)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("precomputed", Precomputed),
        ({"class_path": "gradbal.modules.FrozenCopy"}, FrozenCopy),
        (
            {"class_path": "gradbal.modules.Precomputed", "init_args": {"cache_dir": "c"}},
            Precomputed,
        ),
    ],
)
def test_yaml_builds_the_reference_by_class_path(value: Any, kind: type) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(DPOModule, "model")
    policy = {"class_path": "gradbal.models.TinyPolicy", "init_args": {"hidden_size": 32}}
    cfg = parser.parse_object({"model": {"policy": policy, "reference": value}})
    module = parser.instantiate_classes(cfg).model
    assert isinstance(module.reference, kind)
