"""The rollout-engine interface: what generates GRPO's completions, chosen by ``class_path``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from gradbal.rollout.batch import RolloutBatch
from gradbal.rollout.sampling import SamplingSettings


class RolloutEngine(ABC):
    """Samples completions for token-id prompts; the trainer pushes its weights with a version.

    Life cycle, as :class:`~gradbal.modules.GRPOModule` drives it:

    1. :meth:`attach` with the trainer's policy and tokenizer before the first generation (an
       engine that holds its own copy of the model builds it here).
    2. Before generating at optimizer step ``s``: if :attr:`weight_version` ``!= s``,
       :meth:`sync_weights` with the policy's named parameters and ``s`` (on every rank: gathering
       sharded parameters is collective). Engines with :attr:`needs_weight_sync` ``False``
       generate from the live model and only record the version.
    3. :meth:`generate`, any number of times.
    4. :meth:`close` at the end of the run.

    Subclasses must be constructible from YAML (typed ``__init__`` arguments only), e.g.
    ``rollout_engine: {class_path: gradbal.rollout.HFGenerate, init_args: {share_prefill: true}}``.
    """

    #: ``True`` for engines that keep their own weights (vLLM): :meth:`sync_weights` copies them.
    needs_weight_sync: bool = False
    #: ``True`` for engines whose sampler is not the trainer's forward (own kernels, own
    #: precision): GRPO's ``importance_sampling: auto`` then applies the truncated
    #: importance-sampling correction (TRL's default with vLLM). ``False``: the log-probs are the
    #: trainer's own (HF ``generate``), so ``auto`` applies none.
    needs_importance_sampling: bool = False

    def __init__(self) -> None:
        self._weight_version = -1

    @property
    def weight_version(self) -> int:
        """The version of the last :meth:`sync_weights` (-1: never synced)."""
        return self._weight_version

    @abstractmethod
    def attach(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
        """Bind the trainer's policy and tokenizer (called again with the same ones is a no-op)."""

    @abstractmethod
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
        """Sample ``num_completions`` completions per prompt.

        ``prompt_ids``/``prompt_mask`` ``[B, P]``: left-padded prompts. ``seed``: the same seed
        (with the same weights and inputs) draws the same tokens; ``None`` uses the global torch
        RNG (engines with their own RNG pick any seed). ``nonfinite_error``: builds the
        exception raised when the engine sees NaN/+inf logits, if it can check.
        """

    def sync_weights(self, named_parameters: Iterable[tuple[str, Tensor]], version: int) -> None:
        """Load the trainer's weights and record ``version`` (what later batches report).

        This base implementation only records the version (for engines that use the live model).
        """
        self._weight_version = int(version)

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release what the engine holds (processes, memory). Nothing by default."""
