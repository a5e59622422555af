"""FSDP2Strategy: how gradbal shards a model with ``fully_shard`` (a config object, not a Trainer
strategy: the Trainer's is Lightning's ``ModelParallelStrategy``)."""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from torch import nn

DType = Literal["float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The decoder layers, found by name as gradbal's layer selections find them.
DECODER_LAYERS = r"(?:^|\.)(?:layers|h|layer|blocks)\.\d+"


class FSDP2Strategy:
    """Which submodules ``fully_shard`` makes units of, and FSDP2's precision and offload options.

    Used by every gradbal module's ``configure_model`` when the Trainer runs Lightning's
    ``ModelParallelStrategy`` (:func:`gradbal.sharding.shard_for_trainer`); ignored otherwise.
    Each unit's parameters are gathered just before its forward and freed after it, so the
    peak holds one unit unsharded; the root (the whole model) owns the rest (embeddings, head).

    Args:
        units: The submodules to shard one by one: each entry is a class name
            (``LlamaDecoderLayer``) or a regular expression that must match a whole qualified
            module name (``model\\.layers\\.\\d+``). Default: the decoder layers (names ending in
            ``layers.N``, ``h.N``, ``layer.N`` or ``blocks.N``); ``[]`` shards the root only.
        param_dtype: Dtype of the gathered parameters in forward and backward (FSDP2's
            ``MixedPrecisionPolicy``); ``None`` keeps the stored dtype.
        reduce_dtype: Dtype of the gradient reduce-scatter; ``None``: ``param_dtype``.
        cpu_offload: Keep sharded parameters, gradients and optimiser state on the CPU
            (``CPUOffloadPolicy``; memory is pinned on GPU machines only).
        reshard_after_forward: Free each unit's gathered parameters after its forward (``True``,
            ZeRO-3-like) or keep them until the backward (``False``, ZeRO-2-like: more memory,
            one all-gather less per unit).

    Raises:
        ValueError: If an entry of ``units`` is neither an identifier nor a valid regular
            expression.

    Example::

        >>> FSDP2Strategy(units=["LlamaDecoderLayer"], param_dtype="bfloat16")
        FSDP2Strategy(units=['LlamaDecoderLayer'], param_dtype='bfloat16', reduce_dtype=None, cpu_offload=False, reshard_after_forward=True)
    """

    def __init__(
        self,
        units: list[str] | None = None,
        param_dtype: DType | None = None,
        reduce_dtype: DType | None = None,
        cpu_offload: bool = False,
        reshard_after_forward: bool = True,
    ) -> None:
        for dtype in (param_dtype, reduce_dtype):
            if dtype is not None and dtype not in _DTYPES:
                raise ValueError(
                    f"FSDP2Strategy: dtypes must be one of {list(_DTYPES)} or None. Got {dtype!r}."
                )
        patterns = []
        for unit in units or []:
            try:
                patterns.append(re.compile(unit))
            except re.error as err:
                raise ValueError(
                    f"FSDP2Strategy: units entry {unit!r} is neither a class name nor a valid "
                    f"regular expression ({err}). Use a class name such as 'LlamaDecoderLayer' "
                    "or a pattern matching whole module names such as 'model\\.layers\\.\\d+'."
                ) from err
        self.units = None if units is None else list(units)
        self.param_dtype: DType | None = param_dtype
        self.reduce_dtype: DType | None = reduce_dtype
        self.cpu_offload = cpu_offload
        self.reshard_after_forward = reshard_after_forward
        self._patterns = patterns

    def __repr__(self) -> str:
        return (
            f"FSDP2Strategy(units={self.units!r}, param_dtype={self.param_dtype!r}, "
            f"reduce_dtype={self.reduce_dtype!r}, cpu_offload={self.cpu_offload!r}, "
            f"reshard_after_forward={self.reshard_after_forward!r})"
        )

    def find_units(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The ``(qualified name, module)`` pairs to shard as units, outermost only.

        Raises:
            ValueError: If an entry of ``units`` matches no module (the message lists the
                model's module classes and a few names).
        """
        named = list(model.named_modules())
        if self.units is None:
            picked = [(n, m) for n, m in named if n and re.search(DECODER_LAYERS + "$", n)]
        else:
            picked = []
            for unit, pattern in zip(self.units, self._patterns, strict=True):
                hits = [
                    (n, m)
                    for n, m in named
                    if n and (type(m).__name__ == unit or pattern.fullmatch(n))
                ]
                if not hits:
                    classes = sorted({type(m).__name__ for _, m in named})
                    raise ValueError(
                        f"FSDP2Strategy: units entry {unit!r} matches no module of "
                        f"{type(model).__name__} (neither a class name nor a whole module "
                        f"name). Its module classes are {classes}; names include "
                        f"{[n for n, _ in named[1:6]]}. Use one of those classes (e.g. the "
                        "decoder layer) or a pattern matching whole names, or leave `units` "
                        "unset for the decoder layers."
                    )
                picked += hits
        names = dict.fromkeys(n for n, _ in picked)
        # A unit inside another unit would be sharded twice: keep the outermost.
        return [
            (n, m)
            for n, m in dict(picked).items()
            if not any(n.startswith(f"{o}.") for o in names if o != n)
        ]

    def fully_shard_kwargs(self, device: torch.device) -> dict[str, Any]:
        """``fully_shard``'s ``mp_policy``, ``offload_policy`` and ``reshard_after_forward``."""
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy

        kwargs: dict[str, Any] = {"reshard_after_forward": self.reshard_after_forward}
        if self.param_dtype is not None or self.reduce_dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=None if self.param_dtype is None else _DTYPES[self.param_dtype],
                reduce_dtype=None if self.reduce_dtype is None else _DTYPES[self.reduce_dtype],
            )
        offload: OffloadPolicy = OffloadPolicy()
        if self.cpu_offload:
            # Pinned memory needs a GPU; on CPU-only machines pinning fails.
            offload = CPUOffloadPolicy(pin_memory=device.type == "cuda")
        kwargs["offload_policy"] = offload
        return kwargs
