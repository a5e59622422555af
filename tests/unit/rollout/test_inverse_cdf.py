"""The inverse-CDF sampler draws the same distribution as torch.multinomial, never a zero-weight
category, and HFGenerate(sampler="inverse_cdf") samples from the model's distribution."""

from __future__ import annotations

import pytest
import torch

from gradbal.models import TinyPolicy
from gradbal.modules._sequences import tokenize_prompts
from gradbal.rollout import HFGenerate, SamplingSettings, inverse_cdf_sample


def _frequencies(tokens: torch.Tensor, size: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=size).double() / tokens.numel()


@pytest.mark.parametrize("size", [5, 256, 300, 1000])  # below, at, across and over one block
def test_frequencies_match_the_weights(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    weights = torch.rand(size, generator=gen) ** 4  # uneven
    weights[torch.randperm(size, generator=gen)[: size // 3]] = 0.0
    torch.manual_seed(0)
    n = 100_000
    tokens = inverse_cdf_sample(weights.expand(n, -1).contiguous())
    freq = _frequencies(tokens, size)
    want = (weights / weights.sum()).double()
    assert bool((freq[want == 0] == 0).all())  # a zero weight is never drawn
    sd = (want * (1 - want) / n).sqrt()
    assert bool(((freq - want).abs() <= 5 * sd + 1e-12).all()), (freq - want).abs().max()


def test_extreme_weights_never_draw_a_zero() -> None:
    """Weights spanning 1e-30..1 (exp of very negative logits), zeros at both ends of blocks,
    and uniforms near 1: the drawn category always has a positive weight."""
    size = 1024
    weights = torch.zeros(8, size)
    weights[:, 255] = 1e-30  # last of block 0
    weights[:, 256] = 1.0  # first of block 1
    weights[1:, 1023] = 1e-30  # last category
    weights[3, :] = 0.0
    weights[3, 700] = 3.0
    for seed in range(200):
        torch.manual_seed(seed)
        tokens = inverse_cdf_sample(weights)
        assert bool((weights.gather(1, tokens[:, None]) > 0).all())


def test_uniform_of_one_row_and_device_rng() -> None:
    """One float64 uniform per row from the global RNG: the same seed, the same draws."""
    weights = torch.rand(4, 600)
    torch.manual_seed(5)
    a = inverse_cdf_sample(weights)
    torch.manual_seed(5)
    b = inverse_cdf_sample(weights)
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (4,)


def test_engine_first_tokens_follow_the_model_distribution() -> None:
    """Many completions of one prompt: the first token's frequencies are softmax(logits / T)."""
    model, tok = TinyPolicy(hidden_size=32, num_layers=1, seed=3).build()
    ids, mask = tokenize_prompts(tok, ["add 1+2="], None, torch.device("cpu"))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[0, -1]
    want = torch.softmax(logits.double() / 1.5, -1)
    engine = HFGenerate(sampler="inverse_cdf")
    engine.attach(model, tok)
    n = 4000
    out = engine.generate(
        ids, mask, num_completions=n, sampling=SamplingSettings(1, temperature=1.5), seed=1
    )
    freq = _frequencies(out.completion_ids[:, 0], want.shape[0])
    sd = (want * (1 - want) / n).sqrt()
    assert bool(((freq - want).abs() <= 5 * sd + 1e-9).all())
    assert len(set(out.completion_ids[:, 0].tolist())) > 5  # it sampled


def test_engine_sampler_is_seeded_and_greedy_ignores_it() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=1).build()
    ids, mask = tokenize_prompts(tok, ["add 12+34=", "rev abc="], None, torch.device("cpu"))
    fast, plain = HFGenerate(sampler="inverse_cdf"), HFGenerate()
    fast.attach(model, tok)
    plain.attach(model, tok)
    settings = SamplingSettings(max_new_tokens=6, temperature=0.9)
    a = fast.generate(ids, mask, num_completions=3, sampling=settings, seed=7)
    b = fast.generate(ids, mask, num_completions=3, sampling=settings, seed=7)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.logprobs is not None
    greedy = SamplingSettings(max_new_tokens=6, do_sample=False)
    assert torch.equal(
        fast.generate(ids, mask, num_completions=1, sampling=greedy).completion_ids,
        plain.generate(ids, mask, num_completions=1, sampling=greedy).completion_ids,
    )
    quiet = HFGenerate(sampler="inverse_cdf", logprobs=False)
    quiet.attach(model, tok)
    c = quiet.generate(ids, mask, num_completions=3, sampling=settings, seed=7)
    assert c.logprobs is None and torch.equal(c.completion_ids, a.completion_ids)


def test_an_unknown_sampler_is_refused() -> None:
    with pytest.raises(ValueError, match=r"V07: HFGenerate\(sampler=.*'gumbel'.*inverse_cdf"):
        HFGenerate(sampler="gumbel")  # type: ignore[arg-type]
