"""What a rollout engine returns: completions, their sampled-token log-probs and provenance."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

#: Why a completion ended: it wrote the eos token (``stop``) or hit ``max_new_tokens``
#: (``length``). vLLM's third reason, ``abort``, is never returned by a finished generate call.
FinishReason = Literal["stop", "length"]


class RolloutBatch(NamedTuple):
    """Completions of ``B`` prompts x ``G`` each, grouped by prompt (rows ``i*G .. i*G+G-1``).

    ``completion_ids`` ``[B*G, C]`` (long): generated tokens only, prompt stripped; after a
    row's first eos the row holds padding. ``C`` is the longest completion (at most
    ``max_new_tokens``).

    ``logprobs`` ``[B*G, C]`` float32, or ``None`` when the engine was asked not to compute them:
    the log-probability of each sampled token under the distribution it was drawn from, i.e.
    ``log_softmax(logits / temperature)`` when ``top_p = 1`` and ``top_k`` is off; with top-p
    and/or top-k, the log-probability under the truncated distribution renormalised over the
    tokens kept (so it is >= the temperature-only value, by ``-log`` of the kept mass; this is
    vLLM's ``processed_logprobs``). Greedy decoding (``do_sample=False``) reports
    ``log_softmax(logits)`` (temperature 1, no truncation). Positions after a row's first eos
    are 0.0.

    ``finish_reasons``: one per row, ``"stop"`` (the row contains the eos token) or
    ``"length"``. ``weight_version``: the version passed to the engine's last
    :meth:`~gradbal.rollout.RolloutEngine.sync_weights` (GRPO passes the optimizer step), or -1
    if it was never synced.
    """

    completion_ids: Tensor
    logprobs: Tensor | None
    finish_reasons: tuple[FinishReason, ...]
    weight_version: int

    @property
    def truncated(self) -> Tensor:
        """``[B*G]`` bool: the rows whose finish reason is ``length``."""
        return torch.tensor(
            [r == "length" for r in self.finish_reasons],
            dtype=torch.bool,
            device=self.completion_ids.device,
        )
