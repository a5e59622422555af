"""docs/errors.md V rows: VLLMEngine's settings and vLLM's presence, checked without vLLM."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from gradbal.models import TinyPolicy
from gradbal.rollout import VLLMEngine
from gradbal.rollout.vllm_engine import clean_name
from gradbal.rollout.vllm_env import check_vllm_version, import_vllm
from tests.integration._errors_doc import check_doc_rows


def test_doc_rows() -> None:
    """V01 is triggered in tests/integration/test_importance_sampling.py, V07 in
    tests/unit/rollout/test_inverse_cdf.py, V06 in
    tests/vllm/test_vllm_fit.py (it needs a running vLLM); V05 needs 2 ranks."""
    check_doc_rows(
        "V",
        {
            "V01": RuntimeError,
            "V02": ImportError,
            "V03": ImportError,
            "V04": ValueError,
            "V05": NotImplementedError,
            "V06": RuntimeError,
            "V07": ValueError,
        },
    )


def test_v02_vllm_missing_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ImportError, match=r"V02: VLLMEngine needs vLLM.*make setup-vllm"):
        import_vllm()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_v02_from_attach_in_the_main_environment() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    with pytest.raises(ImportError, match="V02"):
        VLLMEngine().attach(model, tok)


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "1.0.0"])
def test_v03_version_outside_the_range(version: str) -> None:
    with pytest.raises(ImportError, match=rf"V03: .*>= 0\.32\.0 and < 0\.33\.0.*vLLM {version}"):
        check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.32.0", "0.32.1+cpu", "0.32.3rc1"])
def test_the_tested_versions_are_accepted(version: str) -> None:
    check_vllm_version(version)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lora_sync": "delta"}, "lora_sync must be 'merge' or 'adapter', got 'delta'"),
        ({"gpu_memory_utilization": 0.0}, r"gpu_memory_utilization must be in \(0, 1\], got 0.0"),
        ({"kv_cache_memory_bytes": 0}, "kv_cache_memory_bytes must be >= 1 or null, got 0"),
    ],
)
def test_v04_bad_settings(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=f"V04: {fragment}"):
        VLLMEngine(**kwargs)  # type: ignore[arg-type]


def test_v04_adapter_sync_without_lora() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    with pytest.raises(ValueError, match=r"V04: lora_sync='adapter' .* LlamaForCausalLM has none"):
        VLLMEngine(lora_sync="adapter").attach(model, tok)


def test_engine_flags_and_peft_names() -> None:
    assert VLLMEngine.needs_weight_sync and VLLMEngine.needs_importance_sampling
    assert clean_name("base_model.model.lm_head.weight") == "lm_head.weight"
    assert clean_name("model.norm.weight") == "model.norm.weight"
