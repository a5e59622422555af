"""gradbal.sharding: the FSDP2Strategy config, when shard_for_trainer acts or refuses, the
monitors' memory guard, and docs/errors.md's S-rows (S01-S03).

Sharding itself runs in tests/integration/test_sharded_capture.py and test_sharded_fit.py
(2 gloo processes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

from gradbal.callbacks import PreferenceGradientMonitor, TaskGradNormMonitor
from gradbal.callbacks._memory_guard import check_buffer_memory, device_memory
from gradbal.gradstats import TaskGradCapture
from gradbal.models import TinyPolicy
from gradbal.models.lora import LoRA
from gradbal.sharding import FSDP2Strategy, gather_full_state, is_sharded, shard_for_trainer
from tests.integration._errors_doc import check_doc_rows


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return TinyPolicy(hidden_size=32, num_layers=2).build()[0]


def _module_under(strategy: Any) -> LightningModule:
    module = LightningModule()
    module._trainer = SimpleNamespace(strategy=strategy)  # type: ignore[assignment]
    return module


def test_default_units_are_the_decoder_layers(llama: torch.nn.Module) -> None:
    names = [n for n, _ in FSDP2Strategy().find_units(llama)]
    assert names == ["model.layers.0", "model.layers.1"]


def test_units_by_class_name_or_whole_name_outermost_only(llama: torch.nn.Module) -> None:
    by_class = FSDP2Strategy(units=["LlamaDecoderLayer"]).find_units(llama)
    assert [n for n, _ in by_class] == ["model.layers.0", "model.layers.1"]
    nested = FSDP2Strategy(units=[r"model\.layers\.1", r"model\.layers\.1\.mlp"])
    assert [n for n, _ in nested.find_units(llama)] == ["model.layers.1"]
    assert FSDP2Strategy(units=[]).find_units(llama) == []  # the root only


def test_s01_unit_matching_nothing(llama: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="matches no module of LlamaForCausalLM") as info:
        FSDP2Strategy(units=["LlamaDecoderLayr"]).find_units(llama)
    assert "'LlamaDecoderLayer'" in str(info.value)  # the classes are listed


def test_invalid_units_and_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="neither a class name nor a valid regular expression"):
        FSDP2Strategy(units=["layers.("])
    with pytest.raises(ValueError, match="dtypes must be one of"):
        FSDP2Strategy(param_dtype="bf16")  # type: ignore[arg-type]


def test_fully_shard_options() -> None:
    kwargs = FSDP2Strategy(
        param_dtype="bfloat16", reduce_dtype="float32", cpu_offload=True,
        reshard_after_forward=False,
    ).fully_shard_kwargs(torch.device("cpu"))  # fmt: skip
    assert kwargs["reshard_after_forward"] is False
    policy = kwargs["mp_policy"]
    assert isinstance(policy, MixedPrecisionPolicy)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    offload = kwargs["offload_policy"]
    assert isinstance(offload, CPUOffloadPolicy) and offload.pin_memory is False  # no GPU
    assert "mp_policy" not in FSDP2Strategy().fully_shard_kwargs(torch.device("cpu"))


def test_other_strategies_leave_the_model_alone(llama: torch.nn.Module) -> None:
    for strategy in (None, SimpleNamespace()):
        assert shard_for_trainer(_module_under(strategy), llama, FSDP2Strategy()) is llama
    assert not is_sharded(llama)
    assert gather_full_state(llama).keys() == llama.state_dict().keys()


def test_s03_lora_under_model_parallel_is_not_implemented() -> None:
    model = TinyPolicy(hidden_size=32, num_layers=1, lora=LoRA(r=2)).build()[0]
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    with pytest.raises(NotImplementedError, match="LoRA \\(peft\\) models cannot be sharded"):
        shard_for_trainer(_module_under(strategy), model, None)


def test_tensor_parallel_is_refused(llama: torch.nn.Module) -> None:
    strategy = ModelParallelStrategy()
    sizes = {"data_parallel": 1, "tensor_parallel": 2}
    strategy._device_mesh = {  # type: ignore[assignment]
        k: SimpleNamespace(size=lambda v=v: v) for k, v in sizes.items()
    }
    with pytest.raises(NotImplementedError, match="tensor_parallel_size=2"):
        shard_for_trainer(_module_under(strategy), llama, None)


def test_s02_memory_guard_names_the_numbers_and_cheaper_selections(
    llama: torch.nn.Module,
) -> None:
    capture = TaskGradCapture(llama, "all_linear")
    need = capture.buffer_bytes(4)
    per_segment = sum(
        p.numel() for n, p in llama.named_parameters() if n in capture.measured_params
    )
    assert need == 4 * per_segment * 4  # S x measured sizes x fp32
    available = device_memory(torch.device("cpu"), 1)
    fraction = need / available / 2  # half of what all_linear needs
    with pytest.raises(RuntimeError, match="would keep 4 fp32 gradient shares") as info:
        check_buffer_memory(
            "TaskGradNormMonitor", capture, 4, torch.device("cpu"), fraction,
            SimpleNamespace(num_devices=1), llama, "all_linear", False,  # type: ignore[arg-type]
        )  # fmt: skip
    message = str(info.value)
    assert f"max_memory_fraction={fraction}" in message
    assert "'last_attention_block'" in message  # cheaper, listed with its size
    check_buffer_memory(  # within the limit: nothing happens
        "TaskGradNormMonitor", capture, 4, torch.device("cpu"), 0.25,
        SimpleNamespace(num_devices=1), llama, "all_linear", False,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("monitor", [TaskGradNormMonitor, PreferenceGradientMonitor])
def test_monitors_validate_max_memory_fraction(monitor: type) -> None:
    with pytest.raises(ValueError, match="max_memory_fraction"):
        monitor(max_memory_fraction=0.0)
    assert monitor().max_memory_fraction == 0.25


def test_errors_doc_s_rows() -> None:
    check_doc_rows("S", {"S01": ValueError, "S02": RuntimeError, "S03": NotImplementedError})


def test_docs_sharding_example_builds() -> None:
    """docs/distributed.md's YAML example: the strategy sizes and the FSDP2Strategy it names."""
    import yaml

    doc = (Path(__file__).parents[2] / "docs" / "distributed.md").read_text()
    (block,) = [b for b in doc.split("```yaml")[1:] if "FSDP2Strategy" in b]
    config = yaml.safe_load(block.split("```")[0])
    sizes = config["trainer"]["strategy"]["init_args"]
    assert ModelParallelStrategy(**sizes)._tensor_parallel_size == 1
    sharding = config["model"]["init_args"]["sharding"]
    assert sharding["class_path"] == "gradbal.sharding.FSDP2Strategy"
    options = FSDP2Strategy(**sharding["init_args"]).fully_shard_kwargs(torch.device("cpu"))
    assert options["mp_policy"].param_dtype is torch.bfloat16
