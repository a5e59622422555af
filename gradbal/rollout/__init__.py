"""Rollout engines: what samples GRPO's (and evaluation's) completions, chosen by ``class_path``.

:class:`RolloutEngine` is the interface (token ids in; completion ids, sampled-token log-probs,
finish reasons and the weight version out; ``sync_weights`` and ``close``), :class:`HFGenerate`
the default engine (Hugging Face ``generate`` on the live policy), :class:`VLLMEngine` a
colocated vLLM (needs the separate vLLM environment, ``make setup-vllm``). See ``docs/rollout.md``.
"""

from gradbal.rollout.batch import FinishReason, RolloutBatch
from gradbal.rollout.engine import RolloutEngine
from gradbal.rollout.hf_generate import HFGenerate
from gradbal.rollout.inverse_cdf import inverse_cdf_sample
from gradbal.rollout.sampling import SamplingSettings
from gradbal.rollout.seeding import mix_seed, seeded_rng
from gradbal.rollout.vllm_engine import VLLMEngine

__all__ = [
    "FinishReason",
    "HFGenerate",
    "RolloutBatch",
    "RolloutEngine",
    "SamplingSettings",
    "VLLMEngine",
    "inverse_cdf_sample",
    "mix_seed",
    "seeded_rng",
]
