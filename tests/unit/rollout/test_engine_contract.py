"""The rollout-engine contract: what every engine returns, checked on a fake and on HFGenerate."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Literal, cast

import pytest
import torch
from torch import Tensor

from gradbal.models import TinyPolicy
from gradbal.modules._sequences import completion_mask, join, tokenize_prompts
from gradbal.rollout import HFGenerate, RolloutBatch, RolloutEngine, SamplingSettings

PROMPTS = ["add 12+34=", "a longer prompt: rev abcdef=", "cd 3 5 7>22="]
G = 3


def check_contract(out: RolloutBatch, n: int, max_new_tokens: int, eos: int | None) -> None:
    """What any engine's batch must satisfy, whatever it sampled."""
    ids = out.completion_ids
    assert ids.dtype == torch.long and ids.dim() == 2 and ids.shape[0] == n
    assert 1 <= ids.shape[1] <= max_new_tokens
    assert len(out.finish_reasons) == n
    for row, reason in zip(ids, out.finish_reasons, strict=True):
        has_eos = eos is not None and bool((row == eos).any())
        assert reason == ("stop" if has_eos else "length")
        if reason == "length":
            assert ids.shape[1] == max_new_tokens  # only max_new_tokens cuts a row short
    assert torch.equal(out.truncated, torch.tensor([r == "length" for r in out.finish_reasons]))
    if out.logprobs is not None:
        assert out.logprobs.dtype == torch.float32 and out.logprobs.shape == ids.shape
        assert bool((out.logprobs <= 0).all()) and bool(torch.isfinite(out.logprobs).all())


class FakeEngine(RolloutEngine):
    """Writes ``min(i, C)`` copies of token 5 then eos in row ``i``: a deterministic engine."""

    def __init__(self, eos: int = 0) -> None:
        super().__init__()
        self.eos = eos
        self.synced: list[tuple[int, int]] = []  # (number of tensors, version)

    def attach(self, model: torch.nn.Module, tokenizer: Any) -> None:
        pass

    def generate(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        *,
        num_completions: int,
        sampling: SamplingSettings,
        seed: int | None = None,
        nonfinite_error: Callable[[], Exception] | None = None,
    ) -> RolloutBatch:
        n, c = prompt_ids.shape[0] * num_completions, sampling.max_new_tokens
        ids = torch.full((n, c), 5, dtype=torch.long)
        for i in range(n):
            if i < c:
                ids[i, i:] = self.eos
        _, truncated = completion_mask(ids, self.eos)
        reasons = tuple("length" if t else "stop" for t in truncated.tolist())
        return RolloutBatch(ids, torch.full((n, c), -1.0), reasons, self.weight_version)  # type: ignore[arg-type]

    def sync_weights(self, named_parameters: Iterable[tuple[str, Tensor]], version: int) -> None:
        self.synced.append((len(list(named_parameters)), version))
        super().sync_weights((), version)


def test_the_interface_is_abstract_and_a_fake_engine_meets_the_contract() -> None:
    with pytest.raises(TypeError):
        RolloutEngine()  # type: ignore[abstract]
    engine = FakeEngine()
    assert engine.weight_version == -1 and not engine.needs_weight_sync
    engine.sync_weights([("w", torch.zeros(2))], 3)
    assert engine.weight_version == 3 and engine.synced == [(1, 3)]
    out = engine.generate(
        torch.ones(2, 4, dtype=torch.long),
        torch.ones(2, 4, dtype=torch.long),
        num_completions=3,
        sampling=SamplingSettings(max_new_tokens=4),
    )
    check_contract(out, 6, 4, eos=0)
    assert out.finish_reasons == ("stop",) * 4 + ("length",) * 2 and out.weight_version == 3
    engine.close()


def test_sampling_settings_refuse_what_cannot_sample() -> None:
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        SamplingSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature must be > 0 when sampling, got 0"):
        SamplingSettings(max_new_tokens=4, temperature=0.0)
    SamplingSettings(max_new_tokens=4, temperature=0.0, do_sample=False)  # greedy: ignored
    with pytest.raises(
        ValueError, match=r"min_new_tokens must be in \[0, max_new_tokens=4\], got 5"
    ):
        SamplingSettings(max_new_tokens=4, min_new_tokens=5)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, Any, Tensor, Tensor]:
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=1).build()
    model.eval()
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))
    return model, tok, ids, mask


def teacher_forced_logits(model: torch.nn.Module, ids: Tensor, mask: Tensor, out: Tensor) -> Tensor:
    """``[N, C, V]`` fp32 next-token logits at each completion position, one full forward."""
    cmask, _ = completion_mask(out, None)
    seqs = join(ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0), out, cmask)
    with torch.no_grad():
        logits = model(
            input_ids=seqs.input_ids,
            attention_mask=seqs.attention_mask,
            position_ids=(seqs.attention_mask.cumsum(1) - 1).clamp_min(0),
            use_cache=False,
        ).logits
    return logits[:, ids.shape[1] - 1 : -1].float()


def truncate(scaled: Tensor, top_k: int | None, top_p: float) -> Tensor:
    """Top-k then top-p (keep the most likely tokens whose preceding mass is below top_p)."""
    if top_k:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        probs, order = scaled.softmax(-1).sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        drop = torch.zeros_like(scaled, dtype=torch.bool).scatter(-1, order, before >= top_p)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


@pytest.mark.parametrize(
    ("sampler", "share_prefill"),
    [("multinomial", True), ("inverse_cdf", True), ("inverse_cdf", False)],
)
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, None, 1.0), (0.7, None, 1.0), (0.7, 20, 1.0), (1.3, None, 0.9), (0.8, 30, 0.95)],
)
def test_hf_logprobs_are_the_sampling_distributions(
    tiny: tuple[torch.nn.Module, Any, Tensor, Tensor],
    temperature: float,
    top_k: int | None,
    top_p: float,
    sampler: Literal["multinomial", "inverse_cdf"],
    share_prefill: bool,
) -> None:
    """The recorded log-probs are those of the (truncated) distributions the tokens come from;
    a token outside top-k / top-p would make them -inf."""
    model, tok, ids, mask = tiny
    engine = HFGenerate(sampler=sampler, share_prefill=share_prefill)
    engine.attach(model, tok)
    engine.sync_weights(model.named_parameters(), 7)
    sampling = SamplingSettings(max_new_tokens=6, temperature=temperature, top_p=top_p, top_k=top_k)
    out = engine.generate(ids, mask, num_completions=G, sampling=sampling, seed=11)
    check_contract(out, len(PROMPTS) * G, 6, tok.eos_token_id)
    assert out.weight_version == 7 and out.logprobs is not None
    scaled = teacher_forced_logits(model, ids, mask, out.completion_ids) / temperature
    plain = scaled.log_softmax(-1).gather(-1, out.completion_ids.unsqueeze(-1)).squeeze(-1)
    want = (
        truncate(scaled, top_k, top_p)
        .log_softmax(-1)
        .gather(-1, out.completion_ids.unsqueeze(-1))
        .squeeze(-1)
    )
    cmask, _ = completion_mask(out.completion_ids, tok.eos_token_id)
    torch.testing.assert_close(out.logprobs[cmask], want[cmask], atol=1e-5, rtol=0)
    if top_k or top_p < 1.0:  # renormalised over the kept tokens: never below temperature-only
        assert bool((out.logprobs[cmask] >= plain[cmask] - 1e-6).all())
        assert bool((out.logprobs[cmask] > plain[cmask] + 1e-3).any())
    else:
        torch.testing.assert_close(out.logprobs[cmask], plain[cmask], atol=1e-5, rtol=0)


def test_greedy_finish_reasons_and_logprobs_after_eos(
    tiny: tuple[torch.nn.Module, Any, Tensor, Tensor],
) -> None:
    """Both finish reasons: the token greedy decoding writes third in row 0 is made the eos."""
    model, tok, ids, mask = tiny
    greedy = SamplingSettings(max_new_tokens=6, do_sample=False)
    first = HFGenerate()
    first.attach(model, tok)
    plain = first.generate(ids, mask, num_completions=1, sampling=greedy).completion_ids
    eos = int(plain[0, 2])
    fake_tok = cast(Any, SimpleNamespace(eos_token_id=eos, pad_token_id=tok.pad_token_id))
    engine = HFGenerate()
    engine.attach(model, fake_tok)
    out = engine.generate(ids, mask, num_completions=1, sampling=greedy)
    check_contract(out, len(PROMPTS), 6, eos)
    assert out.finish_reasons[0] == "stop" and "length" in out.finish_reasons
    assert out.weight_version == -1  # never synced
    assert out.logprobs is not None
    cmask, _ = completion_mask(out.completion_ids, eos)
    assert bool((out.logprobs[~cmask] == 0).all()) and bool((~cmask[0]).any())
    logits = teacher_forced_logits(model, ids, mask, out.completion_ids.repeat_interleave(G, 0))
    want = logits[::G].log_softmax(-1).gather(-1, out.completion_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out.logprobs[cmask], want[cmask], atol=1e-5, rtol=0)


def test_generate_before_attach_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"before attach\(model, tokenizer\)"):
        HFGenerate().generate(
            torch.ones(1, 2, dtype=torch.long),
            torch.ones(1, 2, dtype=torch.long),
            num_completions=1,
            sampling=SamplingSettings(max_new_tokens=2),
        )


@pytest.mark.parametrize("sampler", ["multinomial", "inverse_cdf"])
def test_min_new_tokens_keeps_eos_out(
    tiny: tuple[torch.nn.Module, Any, Tensor, Tensor],
    sampler: Literal["multinomial", "inverse_cdf"],
) -> None:
    """The token row 0 writes third at a near-greedy temperature is made the eos: it ends row 0
    early, unless ``min_new_tokens`` forbids eos before that many tokens (every row then runs to
    the length, the like-for-like setting of benchmarks/rollout_engines.py)."""
    model, tok, ids, mask = tiny
    cold = SamplingSettings(max_new_tokens=6, temperature=0.01)
    first = HFGenerate()
    first.attach(model, tok)
    eos = int(
        first.generate(ids, mask, num_completions=1, sampling=cold, seed=0).completion_ids[0, 2]
    )
    fake_tok = cast(Any, SimpleNamespace(eos_token_id=eos, pad_token_id=tok.pad_token_id))
    engine = HFGenerate(sampler=sampler)
    engine.attach(model, fake_tok)
    free = engine.generate(ids, mask, num_completions=G, sampling=cold, seed=0)
    assert "stop" in free.finish_reasons
    forced = replace(cold, min_new_tokens=6)
    out = engine.generate(ids, mask, num_completions=G, sampling=forced, seed=0)
    check_contract(out, len(PROMPTS) * G, 6, eos)
    assert set(out.finish_reasons) == {"length"} and not bool((out.completion_ids == eos).any())
