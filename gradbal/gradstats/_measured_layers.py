"""Resolve a selection into the layers TaskGradCapture measures, with reasons for the rest (private)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from gradbal.gradstats.param_selectors import LayerKind, layer_kind, select_modules

FROZEN = (
    "frozen (requires_grad=False); pass include_frozen=True to measure the gradient it would have"
)


class MeasuredLayer(NamedTuple):
    """One hooked module and the parameters whose shares it feeds.

    Attributes:
        name: Qualified module name.
        module: The module.
        kind: ``"linear"``, ``"conv1d"`` or ``"embedding"``.
        weight: Qualified name of the measured weight, ``None`` if not measured.
        bias: Qualified name of the measured bias, ``None`` if not measured.
        weight_param: The weight tensor.
        bias_param: The bias tensor, if any.
        padding_idx: ``nn.Embedding.padding_idx`` (``None`` for other kinds).
        weight_shape: The weight's shape as the layer declares it (``[out, in]``, GPT-2
            ``[in, out]``, ``[V, D]``); a sharded or flattened parameter's own shape differs.
        bias_shape: ``(out,)``, or ``None`` without a bias.
    """

    name: str
    module: nn.Module
    kind: LayerKind
    weight: str | None
    bias: str | None
    weight_param: Tensor
    bias_param: Tensor | None
    padding_idx: int | None
    weight_shape: tuple[int, int]
    bias_shape: tuple[int] | None


def resolve_layers(
    model: nn.Module, selection: str, include_frozen: bool
) -> tuple[dict[str, MeasuredLayer], dict[str, str]]:
    """Return ``(measured layers by name, {skipped module name: reason})``.

    A parameter shared by several modules (tied embeddings: ``wte`` and ``lm_head``) gets its
    gradient from all of them, so every owner of a measured parameter is measured too; if an owner
    cannot be, the layers using that parameter are skipped instead of reporting a partial gradient.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    layers: dict[str, MeasuredLayer] = {}
    skipped: dict[str, str] = {}
    for name, module in select_modules(model, selection):
        made = _make_layer(name, module, names, lambda p: include_frozen or p.requires_grad)
        if isinstance(made, str):
            skipped[name] = made
        else:
            layers[name] = made
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append((name, module))
    for layer in list(layers.values()):
        for param in _measured_params(layer):
            for name, module in owners[id(param)]:
                if name in layers or layer.name not in layers:
                    continue
                made = _make_layer(name, module, names, functools.partial(operator.is_, param))
                if isinstance(made, str):
                    skipped[layer.name] = f"its parameter is shared with `{name}`: {made}"
                    del layers[layer.name]
                else:
                    layers[name] = made
                    skipped.pop(name, None)
    return layers, skipped


def _measured_params(layer: MeasuredLayer) -> list[Tensor]:
    params = [layer.weight_param] if layer.weight is not None else []
    return params + ([layer.bias_param] if layer.bias_param is not None and layer.bias else [])


def _make_layer(
    name: str, module: nn.Module, names: dict[int, str], take: Callable[[Tensor], bool]
) -> MeasuredLayer | str:
    """The layer measuring the parameters ``take`` accepts, or the reason it cannot be measured."""
    kind = layer_kind(module)
    reason = _unsupported_reason(module, kind)
    if kind is None or reason:
        return reason
    weight, bias = module.weight, None if kind == "embedding" else module.bias
    assert isinstance(weight, Tensor)  # checked by _unsupported_reason
    bias_param = bias if isinstance(bias, Tensor) else None
    take_weight = take(weight)
    take_bias = bias_param is not None and take(bias_param)
    if not (take_weight or take_bias):
        return FROZEN
    return MeasuredLayer(
        name=name,
        module=module,
        kind=kind,
        weight=names[id(weight)] if take_weight else None,
        bias=names[id(bias_param)] if take_bias else None,
        weight_param=weight,
        bias_param=bias_param,
        padding_idx=module.padding_idx if isinstance(module, nn.Embedding) else None,
        weight_shape=declared_shape(module, kind),
        bias_shape=None
        if bias_param is None
        else (declared_shape(module, kind)[kind == "conv1d"],),
    )


def declared_shape(module: nn.Module, kind: LayerKind) -> tuple[int, int]:
    """The weight shape the layer declares (not its parameter's, which may be a shard or flat)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    weight = module.weight
    rows = getattr(module, "nx", None)  # transformers' Conv1D keeps nx; older copies may not
    if rows is None:
        rows = weight.shape[0] if isinstance(weight, Tensor) and weight.dim() == 2 else 0
    return int(rows), int(getattr(module, "nf"))  # noqa: B009


def _unsupported_reason(module: nn.Module, kind: LayerKind | None) -> str:
    """Why a selected module cannot be measured ("" if it can)."""
    if kind is None:
        return (
            f"{type(module).__name__} is not a supported layer type (nn.Linear, GPT-2 Conv1D, "
            "nn.Embedding)"
        )
    if kind == "embedding" and module.scale_grad_by_freq:
        return "nn.Embedding with scale_grad_by_freq=True (its gradient is rescaled per batch)"
    weight = module.weight
    if not isinstance(weight, Tensor):
        return f"{type(module).__name__} has no weight tensor"
    if not (weight.is_floating_point() or weight.is_complex()):
        return (
            f"{type(module).__name__} weight has dtype {weight.dtype}: a quantized (integer or "
            "packed) weight has no gradient of its own. Measure LoRA adapters (`trainable`) or "
            "layers that are not quantized"
        )
    expected = declared_shape(module, kind)
    if weight.dim() == 2 and tuple(weight.shape) != expected and not _placeholder(weight):
        return (
            f"{type(module).__name__} weight has shape {tuple(weight.shape)}, not the declared "
            f"{expected} (a packed or quantized weight?)"
        )
    if weight.dim() > 2:
        return f"{type(module).__name__} weight has {weight.dim()} dimensions, not 2"
    return ""


def _placeholder(weight: Tensor) -> bool:
    """A sharded stand-in for the weight: FSDP1's flat 1-D shard (``use_orig_params=True``),
    an empty shard, or DeepSpeed ZeRO-3's ``torch.empty(0)`` (which carries ``ds_shape``)."""
    return weight.dim() < 2 or weight.numel() == 0 or hasattr(weight, "ds_shape")
