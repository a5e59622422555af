"""Checkpoints without the frozen weights: a fingerprint instead, checked when they are rebuilt.

A LoRA run of a 135M model trains 4.9M parameters, yet Lightning's checkpoint holds the whole
state dict: every frozen base weight (and, for DPO/GRPO with a full-weight reference, a frozen
copy of the policy). The policy sources rebuild those weights exactly (the same pretrained
directory, GGUF cache or seeded tiny model), so a checkpoint can leave them out and record an
xxh3-128 fingerprint of them; on load the freshly built model's frozen weights are fingerprinted,
compared (K01 on a mismatch) and put back into the state dict before Lightning loads it strictly.

Frozen entries are parameters with ``requires_grad=False`` and the persistent buffers of
submodules whose parameters are all frozen. Tied weights (``lm_head`` = ``embed_tokens``) appear
under each name, as in the state dict. Under strategies whose state dict is not the module's
own tensors (sharded FSDP, DeepSpeed) nothing is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import xxhash
from torch import Tensor

__all__ = [
    "FROZEN_KEY",
    "FrozenWeightsError",
    "drop_frozen_weights",
    "fingerprint",
    "frozen_names",
    "keeps_frozen_weights",
    "restore_frozen_weights",
]

#: Checkpoint key of the record that replaces the frozen weights.
FROZEN_KEY = "gradbal_frozen_weights"
_HASH = "xxh3_128"


class FrozenWeightsError(RuntimeError):
    """A checkpoint saved without its frozen weights cannot be completed by this model."""


def frozen_names(module: torch.nn.Module) -> set[str]:
    """State-dict names of ``module``'s frozen entries (parameters and buffers, see above).

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        >>> _ = net[0].requires_grad_(False)
        >>> sorted(frozen_names(net))
        ['0.bias', '0.weight']
    """
    names = {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        params = list(sub.parameters())
        if params and not any(p.requires_grad for p in params):
            names.update(n for n, _ in sub.named_buffers(prefix, False, remove_duplicate=False))
    return names & module.state_dict().keys()  # persistent buffers only


def fingerprint(tensors: Mapping[str, Tensor], cast: torch.dtype | None = None) -> str:
    """xxh3-128 (hex) of names, dtypes, shapes and bytes, in sorted name order.

    ``cast``: fingerprint the floating-point tensors as if converted to this dtype first.

    Example::

        >>> a = {"w": torch.zeros(2), "b": torch.ones(1)}
        >>> fingerprint(a) == fingerprint(dict(reversed(list(a.items()))))
        True
        >>> fingerprint(a) == fingerprint({"w": torch.zeros(2, dtype=torch.float64), "b": a["b"]})
        False
    """
    digest = xxhash.xxh3_128()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        if cast is not None and tensor.is_floating_point():
            tensor = tensor.to(cast)  # one tensor at a time: no second copy of the model
        digest.update(f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8)  # GPU->CPU copy per tensor
        digest.update(data.numpy().data)
    return digest.hexdigest()


def _record(tensors: Mapping[str, Tensor], cast: torch.dtype | None = None) -> dict[str, Any]:
    dtypes: dict[str, int] = {}
    for tensor in tensors.values():
        dtype = cast if cast is not None and tensor.is_floating_point() else tensor.dtype
        key = str(dtype).removeprefix("torch.")
        dtypes[key] = dtypes.get(key, 0) + tensor.numel()
    # Plain values only: checkpoints load with torch.load(weights_only=True).
    return {
        "fingerprint": fingerprint(tensors, cast),
        "hash": _HASH,
        "names": len(tensors),
        "dtypes": dict(sorted(dtypes.items())),
    }


def keeps_frozen_weights(source: object) -> bool:
    """Whether checkpoints of ``source``'s policy keep its frozen weights.

    Policy sources that rebuild the same frozen weights on every ``build`` (gradbal's
    ``PretrainedPolicy`` and ``TinyPolicy``) say so with ``save_frozen_weights = False``; any
    other source keeps them, since only its author knows whether ``build`` is reproducible.
    """
    return bool(getattr(source, "save_frozen_weights", True))


def drop_frozen_weights(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Replace the frozen entries of ``checkpoint["state_dict"]`` by a :data:`FROZEN_KEY` record.

    Nothing changes when ``module`` has no frozen entries (full fine-tuning) or when the state
    dict does not hold them as plain tensors under the module's names (sharded strategies).
    """
    state = checkpoint.get("state_dict")
    names = frozen_names(module)
    if not isinstance(state, dict) or not names:
        return
    if not all(type(state.get(name)) is Tensor for name in names):
        return
    frozen = {name: state.pop(name) for name in sorted(names)}
    checkpoint[FROZEN_KEY] = _record(frozen)


def restore_frozen_weights(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Put ``module``'s own frozen weights into a checkpoint saved without them, after checking.

    Raises:
        FrozenWeightsError: K01, the frozen weights differ from those the checkpoint was saved
            with (another base model); K02, the model does not have the frozen weights the
            checkpoint left out, or lacks trainable entries it needs (docs/errors.md).
    """
    record = checkpoint.get(FROZEN_KEY)
    state = checkpoint.get("state_dict")
    if not isinstance(record, dict) or not isinstance(state, dict):
        return  # a full checkpoint: Lightning's strict loading checks it
    current = module.state_dict()
    names = frozen_names(module) - state.keys()
    saved_count = int(record.get("names", -1))
    trainable = current.keys() - names
    missing = sorted(trainable - state.keys())
    unexpected = sorted(state.keys() - current.keys())
    if len(names) != saved_count or missing or unexpected:
        raise FrozenWeightsError(_k02(module, record, len(names), missing, unexpected))
    frozen = {name: current[name] for name in names}
    found = _record(frozen, _saved_float_dtype(record, frozen))
    if found["fingerprint"] != record.get("fingerprint"):
        raise FrozenWeightsError(_k01(record, found))
    state.update(frozen)  # the model's own tensors: loading copies them onto themselves


def _saved_float_dtype(
    record: Mapping[str, Any], frozen: Mapping[str, Tensor]
) -> torch.dtype | None:
    """The one floating dtype the checkpoint's frozen weights had, if the model's differ.

    Under ``precision: bf16-true`` (or ``16-true``) Lightning converts the module after it
    restores the checkpoint, so the model is still in its built dtype here while the fingerprint
    was taken after the conversion. Loading the model's own weights and converting them again
    gives the same values, so the comparison is done on the converted values.
    """
    saved = [getattr(torch, name, None) for name in record.get("dtypes") or {}]
    floating = {d for d in saved if isinstance(d, torch.dtype) and d.is_floating_point}
    now = {t.dtype for t in frozen.values() if t.is_floating_point()}
    if len(floating) == 1 and now and now != floating:
        return floating.pop()
    return None


def _k01(saved: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    return (
        "K01: the frozen weights of this model differ from those the checkpoint was saved with "
        f"(saved without them: fingerprint {saved.get('fingerprint')}, {saved.get('names')} "
        f"tensors, {saved.get('dtypes')}; this model: fingerprint {found['fingerprint']}, "
        f"{found['names']} tensors, {found['dtypes']}). The base model changed since the "
        "checkpoint (another model_name_or_path, revision, GGUF file, dtype or TinyPolicy "
        "seed/size), so resuming would train the saved adapters on other weights. Point the "
        "policy at the model the checkpoint was made with. To keep checkpoints independent of "
        "it, save them with PretrainedPolicy(save_frozen_weights=True): they then hold the "
        "frozen weights themselves."
    )


def _k02(
    module: torch.nn.Module,
    saved: Mapping[str, Any],
    frozen_now: int,
    missing: list[str],
    unexpected: list[str],
) -> str:
    parts = [
        f"the checkpoint left out {saved.get('names')} frozen tensors and this "
        f"{type(module).__name__} has {frozen_now} to put back"
    ]
    if missing:
        parts.append(f"it lacks {len(missing)} trainable entries, e.g. {missing[:3]}")
    if unexpected:
        parts.append(
            f"it holds {len(unexpected)} entries this model has not, e.g. {unexpected[:3]}"
        )
    return (
        "K02: cannot load a checkpoint saved without its frozen weights: "
        + "; ".join(parts)
        + ". The model must be built (configure_model) with the same policy, LoRA and reference "
        "settings as the run that saved it, which rebuilds the frozen weights. Resume with "
        "those settings, or save self-contained checkpoints with "
        "PretrainedPolicy(save_frozen_weights=True)."
    )
