"""Sampled-token log-probs recorded while Hugging Face ``generate`` samples, one step at a time."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gradbal.rollout.sampling import SamplingSettings


def sampling_warpers(sampling: SamplingSettings) -> LogitsProcessorList:
    """Temperature, top-k and top-p as ``generate`` builds them (same classes, order, conditions).

    :func:`~gradbal.rollout.hf_generate.hf_generate` passes these as its own logits processors
    (and ``generate`` the neutral ``temperature=1, top_k=0, top_p=1``), so that
    :class:`SampledLogprobs`, placed after them, sees the scores the token is drawn from.
    ``generate`` applies the same processors in the same order either way: it runs custom
    processors after its built-in ones and before its warpers.
    """
    warpers = LogitsProcessorList()
    if sampling.do_sample:
        if sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            warpers.append(TopKLogitsWarper(top_k=sampling.top_k, min_tokens_to_keep=1))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
    return warpers


class SampledLogprobs(LogitsProcessor):
    """Record ``log_softmax(scores)[token]`` of every sampled token; scores pass unchanged.

    ``generate`` calls its logits processors before it samples, so the token drawn from step
    ``t``'s scores is only known at step ``t + 1`` (the last column of ``input_ids``). Only step
    ``t``'s scores ``[N, V]`` are kept (not all ``C`` steps, as ``output_scores`` does), and
    per step one ``logsumexp`` over the vocabulary is computed; :meth:`finish` gathers the last
    step with the final tokens.
    """

    def __init__(self) -> None:
        self._prev: Tensor | None = None  # [N, V] scores of the last step
        self._steps: list[Tensor] = []  # [N] per generated token

    def _gather(self, tokens: Tensor) -> None:
        assert self._prev is not None
        prev = self._prev.float()
        chosen = prev.gather(1, tokens.unsqueeze(1)).squeeze(1)  # [N]
        self._steps.append(chosen - torch.logsumexp(prev, dim=-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prev is not None:
            self._gather(input_ids[:, -1])
        self._prev = scores
        return scores

    def finish(self, completion_ids: Tensor) -> Tensor:
        """``[N, C]`` float32 log-probs of ``completion_ids`` (the generated columns)."""
        if self._prev is not None and completion_ids.shape[1] > len(self._steps):
            self._gather(completion_ids[:, -1])
        self._prev = None
        if len(self._steps) != completion_ids.shape[1]:
            raise RuntimeError(
                f"Recorded {len(self._steps)} sampling steps for {completion_ids.shape[1]} "
                "generated tokens: transformers' generate no longer calls logits processors once "
                "per token. Pass logprobs=False to HFGenerate and report this."
            )
        if not self._steps:
            return torch.zeros(completion_ids.shape, dtype=torch.float32)
        return torch.stack(self._steps, dim=1)
