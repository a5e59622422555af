"""``HFGenerate``: the default rollout engine, Hugging Face ``generate`` on the live policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from gradbal.models.kv_cache import cache_argument, can_share_prefix
from gradbal.nonfinite_loss import nonfinite_logits_error
from gradbal.rollout._sampled_logprobs import SampledLogprobs, sampling_warpers
from gradbal.rollout.batch import FinishReason, RolloutBatch
from gradbal.rollout.engine import RolloutEngine
from gradbal.rollout.inverse_cdf import inverse_cdf_sample
from gradbal.rollout.sampling import SamplingSettings
from gradbal.rollout.seeding import seeded_rng


class HFGenerate(RolloutEngine):
    """Sample with the trainer's own model through ``model.generate`` (no copy, no weight sync).

    Args:
        share_prefill: encode each prompt once, not once per completion (same tokens, less
            work; used for decoder-only models with a full-attention KV cache).
        logprobs: record each sampled token's log-prob (see
            :class:`~gradbal.rollout.RolloutBatch`); one ``logsumexp`` over the vocabulary per
            generated token, and with top-p a second sort of it. ``False``: ``logprobs`` is
            ``None``.
        sampler: how a token is drawn from the (temperature, top-k, top-p) scores.
            ``"multinomial"``: ``generate``'s own ``torch.multinomial``, so the same seed gives
            the same tokens as plain ``model.generate``. ``"inverse_cdf"``: the same distribution
            drawn with one uniform per row (:func:`~gradbal.rollout.inverse_cdf_sample`), much
            faster on the CPU with a large vocabulary (14.8 ms against 1.3 ms per token for 16
            rows of SmolLM2's 49,152 tokens here, ``benchmarks/sampler_cost.py``); the tokens
            differ from ``multinomial``'s for the same seed.

    Example::

        >>> from gradbal.models import TinyPolicy
        >>> model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
        >>> engine = HFGenerate()
        >>> engine.attach(model, tok)
        >>> ids = tok(["1+1="], return_tensors="pt")
        >>> out = engine.generate(ids.input_ids, ids.attention_mask, num_completions=2,
        ...                       sampling=SamplingSettings(max_new_tokens=3), seed=0)
        >>> out.completion_ids.shape[0], out.logprobs.dtype, out.weight_version
        (2, torch.float32, -1)
    """

    def __init__(
        self,
        share_prefill: bool = True,
        logprobs: bool = True,
        sampler: Literal["multinomial", "inverse_cdf"] = "multinomial",
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(
                f"V07: HFGenerate(sampler=...) must be one of {SAMPLERS}. Got {sampler!r}: "
                "'multinomial' samples as transformers' generate does, 'inverse_cdf' draws the "
                "same distribution faster on the CPU."
            )
        self.share_prefill = share_prefill
        self.logprobs = logprobs
        self.sampler = sampler
        self._model: torch.nn.Module | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    def attach(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
        self._model, self._tokenizer = model, tokenizer

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
        if self._model is None or self._tokenizer is None:
            raise RuntimeError(
                "HFGenerate.generate was called before attach(model, tokenizer): the engine has "
                "no model to sample from. Call engine.attach(policy, tokenizer) first "
                "(GRPOModule does this itself)."
            )
        with seeded_rng(seed, prompt_ids.device):
            ids, logprobs = hf_generate(
                self._model,
                self._tokenizer,
                prompt_ids,
                prompt_mask,
                sampling,
                num_return_sequences=num_completions,
                share_prefill=self.share_prefill,
                nonfinite_error=nonfinite_error,
                logprobs=self.logprobs,
                sampler=self.sampler,
            )
        eos = self._tokenizer.eos_token_id
        is_eos = ids == eos if eos is not None else torch.zeros_like(ids, dtype=torch.bool)
        has_eos = is_eos.any(dim=1)  # [N]
        if logprobs is not None:
            after_eos = (is_eos.int().cumsum(1) - is_eos.int()) > 0  # [N, C] past the first eos
            logprobs = logprobs.to(ids.device).masked_fill(after_eos, 0.0)
        reasons: tuple[FinishReason, ...] = tuple(
            "stop" if h else "length" for h in has_eos.tolist()
        )
        return RolloutBatch(ids, logprobs, reasons, self.weight_version)


SAMPLERS = ("multinomial", "inverse_cdf")


@torch.no_grad()
def hf_generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingSettings,
    *,
    num_return_sequences: int = 1,
    share_prefill: bool = True,
    nonfinite_error: Callable[[], Exception] | None = None,
    logprobs: bool = False,
    sampler: str = "multinomial",
) -> tuple[Tensor, Tensor | None]:
    """Completion token ids ``[B * num_return_sequences, C]`` (prompt columns stripped), and
    their sampled-token log-probs ``[B * num_return_sequences, C]`` if ``logprobs``.

    Rows are grouped by prompt: rows ``i*G .. i*G+G-1`` are prompt ``i``'s completions. The model
    is put in eval mode while it generates (no dropout), then restored. ``share_prefill``:
    encode each prompt once, not once per completion (see :func:`_shared_prefill`).
    ``nonfinite_error``: builds the exception raised when the next-token logits hold NaN or
    +inf (diverged weights), before ``torch.multinomial`` fails on them with a message that
    names no cause; default :func:`~gradbal.nonfinite_loss.nonfinite_logits_error`.
    ``sampler``: see :class:`HFGenerate` (``"inverse_cdf"`` draws the token in a logits
    processor and lets ``generate`` pick it greedily). Draws from the global torch RNG.
    """
    was_training = model.training
    model.eval()
    try:
        # Sampling: temperature / top-k / top-p are applied by sampling_warpers (the processors
        # generate itself would add, in its order), so the recorder sees the final scores.
        # our own sampler: generate decodes greedily the scores it leaves (only the drawn token)
        own_sampler = sampling.do_sample and sampler == "inverse_cdf"
        kwargs: dict[str, Any] = (
            {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
            if sampling.do_sample and not own_sampler
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        if sampling.min_new_tokens:
            kwargs["min_new_tokens"] = sampling.min_new_tokens
        ids, mask = prompt_ids, prompt_mask
        extra: dict[str, Any] = {}
        g = num_return_sequences
        if share_prefill and g > 1 and can_share_prefix(model, prompt_ids.shape[1]):
            try:
                ids, mask, extra = _shared_prefill(model, prompt_ids, prompt_mask, g)
            except TypeError:  # a custom model whose forward takes no `cache`/`logits_to_keep`
                ids, mask, extra = prompt_ids, prompt_mask, {}
        repeats = 1 if extra else g
        if own_sampler and repeats > 1:  # greedy generate takes no num_return_sequences > 1
            ids, mask, repeats = ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0), 1
        check = _FiniteLogits(nonfinite_error or (lambda: nonfinite_logits_error(None, "sampling")))
        recorder: SampledLogprobs | None = (
            InverseCDFSampler(record=logprobs)
            if own_sampler
            else SampledLogprobs()
            if logprobs
            else None
        )
        processors = LogitsProcessorList(
            [check, *sampling_warpers(sampling)] + ([recorder] if recorder is not None else [])
        )
        out = model.generate(  # type: ignore[operator]
            input_ids=ids,
            logits_processor=processors,
            attention_mask=mask,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=repeats,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **extra,
            **kwargs,
        )
    finally:
        model.train(was_training)
    completion_ids = out[:, prompt_ids.shape[1] :]
    if recorder is None or (isinstance(recorder, InverseCDFSampler) and not recorder.record):
        return completion_ids, None
    return completion_ids, recorder.finish(completion_ids)


class InverseCDFSampler(SampledLogprobs):
    """The last logits processor of a greedy ``generate``: draw each row's token from
    ``softmax(scores)`` by :func:`~gradbal.rollout.inverse_cdf_sample`, record its log-prob if
    ``record``, and return scores that are ``-inf`` except at the drawn token."""

    def __init__(self, record: bool = True) -> None:
        super().__init__()
        self.record = record

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores32 = scores.float()
        norm = torch.logsumexp(scores32, dim=-1, keepdim=True)  # [N, 1]
        tokens = inverse_cdf_sample((scores32 - norm).exp_())  # [N]
        if self.record:
            chosen = scores32.gather(1, tokens.unsqueeze(1))
            self._steps.append((chosen - norm).squeeze(1))
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, tokens.unsqueeze(1), 0.0)  # type: ignore[return-value]


class _FiniteLogits(LogitsProcessor):
    """Raise ``error()`` if a row of next-token scores has a NaN, a +inf, or nothing finite."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # a row's max is NaN if it has a NaN, +inf if it has a +inf, -inf if nothing is finite
        bad = ~torch.isfinite(scores.amax(dim=-1)).all()
        if bool(bad):  # one host sync per token; generate already syncs per token
            raise self.error()
        return scores


def _shared_prefill(
    model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, g: int
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Encode each prompt once (all but its last token) and repeat its KV cache ``g`` times.

    ``generate`` with ``num_return_sequences=g`` repeats every prompt ``g`` times before the
    prefill, so the prompt is encoded ``g`` times. Here the first ``P - 1`` tokens are encoded
    once per prompt; ``generate`` then continues from the cache with the repeated prompts and
    feeds only the last prompt token, sampling exactly what it would have sampled otherwise.
    """
    head_ids, head_mask = prompt_ids[:, :-1], prompt_mask[:, :-1]
    cache = DynamicCache(config=getattr(model, "config", None))
    name = cache_argument(model) or "cache"
    model(
        input_ids=head_ids,
        attention_mask=head_mask,
        position_ids=(head_mask.long().cumsum(1) - 1).clamp_min(0),
        use_cache=True,
        logits_to_keep=1,
        **{name: cache},
    )
    cache.batch_repeat_interleave(g)
    ids = prompt_ids.repeat_interleave(g, 0)
    mask = prompt_mask.repeat_interleave(g, 0)
    return ids, mask, {name: cache}
