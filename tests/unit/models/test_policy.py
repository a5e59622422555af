"""Policy sources: tiny families, save/load round trip, LoRA, clear errors on bad paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradbal.models import LoRA, PretrainedPolicy, TinyPolicy, byte_level_tokenizer


def test_byte_tokenizer_is_lossless_on_any_text() -> None:
    tok = byte_level_tokenizer()
    for text in ["add 12+34=", "héllo wörld ✓", "tabs\tand\nnewlines", ""]:
        assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_save_pretrained_round_trip_gives_the_same_logits(family: str, tmp_path: Path) -> None:
    model, tok = TinyPolicy(family=family, hidden_size=32, num_layers=2).build()  # type: ignore[arg-type]
    model.save_pretrained(tmp_path)  # type: ignore[operator]
    tok.save_pretrained(tmp_path)
    loaded, tok2 = PretrainedPolicy(str(tmp_path)).build()
    ids = torch.tensor([tok("sort dcba=")["input_ids"]])
    model.eval()
    loaded.eval()
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert tok2.padding_side == "left" and tok2.pad_token_id == tok.pad_token_id


def test_tiny_policy_is_seeded_independently_of_the_global_rng() -> None:
    torch.manual_seed(1)
    a, _ = TinyPolicy(hidden_size=32, num_layers=1, seed=5).build()
    torch.manual_seed(2)
    b, _ = TinyPolicy(hidden_size=32, num_layers=1, seed=5).build()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_lora_trains_only_adapters_and_can_disable_them() -> None:
    model, tok = TinyPolicy(
        hidden_size=32, num_layers=1, lora=LoRA(r=2, target_modules=["q_proj", "v_proj"])
    ).build()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    ids = torch.tensor([tok("rev abc=")["input_ids"]])
    with model.disable_adapter():  # type: ignore[operator]
        base = model(ids).logits
    torch.testing.assert_close(model(ids).logits, base)  # LoRA B starts at zero


def test_missing_local_path_says_what_and_where(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=r"does not exist \(working directory"):
        PretrainedPolicy(str(missing)).build()


def test_hub_name_while_offline_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"HF_HUB_OFFLINE is set.*local directory"):
        PretrainedPolicy("some-org/some-model-that-is-not-cached").build()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_size": 0}, "hidden_size must be >= 1, got 0"),
        ({"hidden_size": 48, "num_heads": 5}, r"divisible by num_heads \(5\)"),
    ],
)
def test_bad_tiny_sizes(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TinyPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_lora_rank() -> None:
    with pytest.raises(ValueError, match="rank r must be >= 1, got 0"):
        LoRA(r=0)
