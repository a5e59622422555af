"""When a model can reuse one prompt's KV cache for several continuations.

Two places encode a prompt once and repeat its key/value cache for the ``G`` completions of its
group instead of encoding it ``G`` times: generation (``HFGenerate``'s shared prefill) and the
GRPO training forward (``completion_logprobs`` with ``group_size``). Both need a decoder-only
model whose ``forward`` takes a cache and whose every layer attends to the whole prefix, and the
training forward also needs that no activation checkpointing drops the cache.
"""

from __future__ import annotations

import inspect

import torch

__all__ = ["activation_checkpointing", "cache_argument", "can_share_prefix"]


def _forward_owner(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose ``forward`` signature tells the accepted arguments.

    A peft model's ``forward`` takes ``**kwargs`` and hands them to its base model, so the base
    model's signature is the one that counts.
    """
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        base = get_base()
        if isinstance(base, torch.nn.Module):
            return base
    return model


def cache_argument(model: torch.nn.Module) -> str | None:
    """The name the model's ``forward`` and ``generate`` take a KV cache by, if any.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (5.17 still takes
    ``past_key_values`` and rejects ``cache`` in ``generate``); a custom model may take neither.
    A peft wrapper is looked through (it passes the cache on to its base model).
    """
    try:
        parameters = inspect.signature(_forward_owner(model).forward).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def can_share_prefix(model: torch.nn.Module, prefix_length: int) -> bool:
    """A decoder-only model with a plain (full-attention) KV cache, and a prefix of > 1 token."""
    config = getattr(_forward_owner(model), "config", None)
    return (
        prefix_length > 1
        and cache_argument(model) is not None
        and config is not None
        and not getattr(config, "is_encoder_decoder", False)
        and getattr(config, "sliding_window", None) is None
        and set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
    )


def activation_checkpointing(model: torch.nn.Module) -> bool:
    """Whether any layer of ``model`` recomputes its forward in the backward.

    transformers' checkpointed layers drop a KV cache passed to them while training (a replayed
    forward would write the cache twice), and torch's ``checkpoint_wrapper`` would replay the
    cache update: a forward that continues from a cache must not run under either.
    """
    return any(
        getattr(module, "gradient_checkpointing", False) is True
        or hasattr(module, "_checkpoint_wrapped_module")
        for module in model.modules()
    )
