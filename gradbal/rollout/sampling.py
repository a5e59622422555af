"""How a rollout engine samples: the settings every engine maps onto its own API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings of one :meth:`~gradbal.rollout.RolloutEngine.generate` call.

    ``do_sample=False`` decodes greedily (``temperature``, ``top_p`` and ``top_k`` are then
    ignored). ``top_k``: ``None`` or 0 is off; ``top_p=1.0`` is off. They map onto Hugging Face
    ``generate`` keyword arguments and onto vLLM ``SamplingParams(max_tokens, temperature,
    top_p, top_k)`` (vLLM's "off" for ``top_k`` is -1). ``min_new_tokens``: eos cannot end a
    completion before that many tokens (HF ``min_new_tokens``, vLLM ``min_tokens``); with
    ``min_new_tokens == max_new_tokens`` every completion has the same length, so two engines
    do the same work (a like-for-like timing).

    Example::

        >>> SamplingSettings(max_new_tokens=16, temperature=0.7).do_sample
        True
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    do_sample: bool = True
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens must be >= 1, got {self.max_new_tokens}: the engine must be "
                "allowed to write at least one token."
            )
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got "
                f"{self.min_new_tokens}. Lower it, or raise max_new_tokens."
            )
        if self.do_sample and self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 when sampling, got {self.temperature}. Use "
                "do_sample=False for greedy decoding."
            )
