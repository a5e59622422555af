"""Pick the layers whose per-task gradient is measured: last attention block, last block, all, ...

A *selection* names a set of modules that own parameters directly. Named selections:

* ``"last_attention_block"`` (default; Wu et al. 2025, arXiv:2510.19178, the last-attention-block
  proxy): the attention child (``self_attn`` / ``attn`` / ``attention`` / ``self_attention``) of
  the last decoder layer, e.g. Llama/Qwen2 ``model.layers.{L-1}.self_attn.{q,k,v,o}_proj`` (with
  Qwen2's q/k/v biases) or GPT-2 ``transformer.h.{L-1}.attn.{c_attn,c_proj}``;
* ``"last_block"``: every module with parameters in the last decoder layer (norms included);
* ``"all_linear"``: every ``nn.Linear`` and GPT-2 ``Conv1D`` in the model (``lm_head`` included);
* ``"trainable"``: every module with a parameter that has ``requires_grad`` (LoRA adapters under
  peft, everything under full fine-tuning).

Any other string is a regular expression, matched with ``re.search`` against qualified module
names. The decoder layers are found by name: the last module whose qualified name ends in
``layers.N``, ``h.N``, ``layer.N`` or ``blocks.N`` (and that has a trainable parameter, if any
has one), so wrappers (peft, DDP, FSDP1's ``_fsdp_wrapped_module``, ``checkpoint_wrapper``'s
``_checkpoint_wrapped_module``, ``torch.compile``'s ``_orig_mod``) and frozen reference copies do
not matter.

This module imports torch only: GPT-2's ``Conv1D`` is recognised by its class name and ``nf``
attribute, not by importing transformers.
"""

from __future__ import annotations

import re
from typing import Literal

from torch import nn

NAMED_SELECTIONS = ("last_attention_block", "last_block", "all_linear", "trainable")
LayerKind = Literal["linear", "conv1d", "embedding"]

_DECODER_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.\d+$")
_ATTENTION_CHILDREN = ("self_attn", "attn", "attention", "self_attention")
# Children that wrappers put between a module and its original content: FSDP1's
# FullyShardedDataParallel, torch's checkpoint_wrapper (HF gradient checkpointing does not wrap)
# and torch.compile's OptimizedModule.
WRAPPED_CHILDREN = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def layer_kind(module: nn.Module) -> LayerKind | None:
    """Return how a module's weight gradient is formed from its input and output gradient.

    ``"linear"``: ``nn.Linear`` (weight ``[out, in]``); ``"conv1d"``: transformers' GPT-2
    ``Conv1D`` (weight ``[in, out]``); ``"embedding"``: ``nn.Embedding``; ``None``: unsupported.

    Example::

        >>> layer_kind(nn.Linear(2, 3)), layer_kind(nn.LayerNorm(3))
        ('linear', None)
    """
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int):
        return "conv1d"
    return None


def last_decoder_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the model's last decoder layer.

    The last one with a trainable parameter, if any has one: a frozen copy registered after the
    policy (GRPO's ``ref_model`` under full fine-tuning) is passed over. LoRA adapters count as
    trainable, so under peft the policy's own last layer is found.

    Raises:
        ValueError: If no module name ends in ``layers.N``, ``h.N``, ``layer.N`` or ``blocks.N``.
    """
    found = [
        (name, module) for name, module in model.named_modules() if _DECODER_LAYER.search(name)
    ]
    if not found:
        raise ValueError(
            "Could not find the decoder layers: no module name ends in `layers.N`, `h.N`, "
            f"`layer.N` or `blocks.N`. Got top-level modules {_child_names(model)}. Pass a "
            "regular expression on module names as the selection instead."
        )
    trainable = [(n, m) for n, m in found if any(p.requires_grad for p in m.parameters())]
    return (trainable or found)[-1]


def last_attention_block(model: nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the attention child of the last decoder layer.

    Raises:
        ValueError: If the last decoder layer has no child named ``self_attn``, ``attn``,
            ``attention`` or ``self_attention``.
    """
    layer_name, layer = unwrap(*last_decoder_layer(model))
    children = dict(layer.named_children())
    for child in _ATTENTION_CHILDREN:
        if child in children:
            return f"{layer_name}.{child}", children[child]
    raise ValueError(
        f"The last decoder layer `{layer_name}` has no attention child named one of "
        f"{list(_ATTENTION_CHILDREN)}. Got children {list(children)}. Pass a regular expression "
        f"such as `{re.escape(layer_name)}\\.<attention child>\\.` as the selection instead."
    )


def unwrap(name: str, module: nn.Module) -> tuple[str, nn.Module]:
    """Look through wrappers (FSDP1, ``checkpoint_wrapper``, ``torch.compile``): the qualified
    name and module of the wrapped original.

    Example::

        >>> from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        ...     checkpoint_wrapper,
        ... )
        >>> unwrap("layers.0", checkpoint_wrapper(nn.Linear(2, 2)))[0]
        'layers.0._checkpoint_wrapped_module'
    """
    while True:
        inner = next(((n, m) for n, m in module.named_children() if n in WRAPPED_CHILDREN), None)
        if inner is None:
            return name, module
        name, module = f"{name}.{inner[0]}" if name else inner[0], inner[1]


def select_modules(model: nn.Module, selection: str) -> list[tuple[str, nn.Module]]:
    """Return the ``(qualified_name, module)`` pairs, owning parameters directly, in a selection.

    Modules of unsupported types are included (the caller reports them as skipped), except for
    ``"all_linear"``, which selects by type.

    Args:
        model: The model (any wrapper: peft, DDP).
        selection: One of ``NAMED_SELECTIONS`` or a regular expression on module names.

    Raises:
        ValueError: If the selection is not a valid regular expression, or selects nothing.

    Example::

        >>> model = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), nn.Linear(4, 5))
        >>> [name for name, _ in select_modules(model, "all_linear")]
        ['2']
        >>> [name for name, _ in select_modules(model, r"^[01]$")]
        ['0', '1']
    """
    owners = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(False))]
    if selection in ("last_attention_block", "last_block"):
        pick = last_attention_block if selection == "last_attention_block" else last_decoder_layer
        prefix = pick(model)[0] + "."
        chosen = [(n, m) for n, m in owners if n.startswith(prefix)]
    elif selection == "all_linear":
        chosen = [(n, m) for n, m in owners if layer_kind(m) in ("linear", "conv1d")]
    elif selection == "trainable":
        chosen = [(n, m) for n, m in owners if any(p.requires_grad for p in m.parameters(False))]
    else:
        try:
            pattern = re.compile(selection)
        except re.error as err:
            raise ValueError(
                f"Selection {selection!r} is neither one of {list(NAMED_SELECTIONS)} nor a valid "
                f"regular expression ({err})."
            ) from err
        chosen = [(n, m) for n, m in owners if pattern.search(n)]
    if not chosen:
        flat = any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
        raise ValueError(
            f"Selection {selection!r} selects no module with parameters. Modules with parameters "
            f"include {[n for n, _ in owners[:8]]}. Use one of {list(NAMED_SELECTIONS)} or a "
            "regular expression matching some of those names."
            + (
                " Under FSDP1, wrap with use_orig_params=True: otherwise the parameters are "
                "flattened into the wrappers and no layer owns any."
                if flat
                else ""
            )
        )
    return chosen


def _child_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]
