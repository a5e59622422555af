"""Reference policies for the KL penalty (GRPO) and the preference objectives (DPO), by class_path.

A policy module scores completions under a *reference* policy: the policy as it was before
training. Where those log-probs come from is a choice with a memory and compute cost, so it is
one object, chosen in YAML, shared by :class:`~gradbal.modules.GRPOModule` and
:class:`~gradbal.modules.DPOModule`:

* :class:`InitialPolicy` (the default): under LoRA the adapter-disabled base, otherwise a frozen
  copy; what TRL does (``ref_model=None`` with a PEFT model).
* :class:`FrozenCopy`: always a frozen copy of the initial policy (also under LoRA, e.g. when
  the adapters were loaded from a previous run and the reference must include them).
* :class:`AdapterDisabled`: always the adapter-disabled base (refuses a model without adapters).
* :class:`Precomputed` (DPO only): every pair of every task scored once at setup and looked up
  during training; no reference model in memory.

Example (YAML)::

    model:
      class_path: gradbal.modules.DPOModule
      init_args:
        reference:
          class_path: gradbal.modules.Precomputed
          init_args: {cache_dir: runs/dpo_reference, batch_size: 32}
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["AdapterDisabled", "FrozenCopy", "InitialPolicy", "Precomputed", "Reference"]


class Reference:
    """Where a module's reference log-probs come from (base class; see the module docstring).

    A module calls :meth:`frozen_copy` once in ``configure_model`` (before it shards the policy)
    and keeps what it returns as ``module.ref_model`` (so checkpoints keep their keys), then
    scores under :meth:`scoring` with no gradient.
    """

    #: Log-probs come from a forward at each step (``False``: looked up, see :class:`Precomputed`).
    forward: bool = True

    def frozen_copy(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A frozen copy of the initial ``model`` to keep, or ``None`` (the default: none)."""
        return None

    @contextmanager
    def scoring(
        self, model: torch.nn.Module, ref_model: torch.nn.Module | None
    ) -> Iterator[torch.nn.Module]:
        """The model to score the reference with, inside this context (no gradient)."""
        if ref_model is not None:
            with torch.no_grad():
                yield ref_model.eval()
            return
        disable = getattr(model, "disable_adapter", None)
        if not callable(disable):
            raise RuntimeError(
                f"{self!r} scores the reference with the adapters disabled, but the policy "
                f"({type(model).__name__}) has no `disable_adapter()` (it is not a PEFT model). "
                "Use `reference: gradbal.modules.FrozenCopy` (a frozen copy of the initial "
                "policy), or train with LoRA (`PretrainedPolicy(lora=...)`)."
            )
        with torch.no_grad(), disable():
            yield model

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).eval().requires_grad_(False)


def _has_adapters(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "disable_adapter", None))


class InitialPolicy(Reference):
    """The initial policy, as cheaply as it exists: the adapter-disabled base under LoRA (no
    second model), otherwise a frozen copy made before training. The default."""

    def frozen_copy(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None if _has_adapters(model) else _copy(model)


class FrozenCopy(Reference):
    """A frozen copy of the initial policy, also under LoRA (then the adapters' initial values
    are part of the reference; it costs a second model in memory)."""

    def frozen_copy(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return _copy(model)


class AdapterDisabled(Reference):
    """The adapter-disabled base model; for a policy without adapters it refuses at
    ``configure_model`` (use :class:`FrozenCopy` or :class:`InitialPolicy` there)."""

    def frozen_copy(self, model: torch.nn.Module) -> torch.nn.Module | None:
        if not _has_adapters(model):
            raise ValueError(
                "reference=AdapterDisabled() needs a PEFT policy (one with `disable_adapter()`), "
                f"got {type(model).__name__}. Train with LoRA (`PretrainedPolicy(lora=...)`) or "
                "use `reference: gradbal.modules.InitialPolicy` (a frozen copy without LoRA)."
            )
        return None


class Precomputed(Reference):
    """Score every preference pair of every task once at setup with the initial policy and look
    the values up during training (``DPOModule`` only: GRPO's completions are new each step).

    Args:
        cache_dir: Where the Arrow cache of the scores is written (``datasets``), reused by
            later runs with the same data, weights and tokenisation; ``None``: in memory.
        batch_size: Pairs per forward when scoring, >= 1.

    Raises:
        ValueError: On ``batch_size < 1``.
    """

    forward = False

    def __init__(self, cache_dir: str | None = None, batch_size: int = 32):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"Precomputed(batch_size=...) must be an int >= 1 (pairs per scoring forward), "
                f"got {batch_size!r}."
            )
        self.cache_dir, self.batch_size = cache_dir, batch_size

    @contextmanager
    def scoring(
        self, model: torch.nn.Module, ref_model: torch.nn.Module | None
    ) -> Iterator[torch.nn.Module]:
        """Setup-time scoring: the initial policy itself, in eval mode, without gradient."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield model
        finally:
            model.train(was_training)

    def __repr__(self) -> str:
        return f"Precomputed(cache_dir={self.cache_dir!r}, batch_size={self.batch_size})"
