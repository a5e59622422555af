"""Check that row ``i`` of the reported per-row losses is row ``i`` of the measured layers' input.

The capture attributes the gradient that flows through row ``i`` of a layer's input to the
segment of ``losses[i]``. That is right only if each ``losses[i]`` reaches the layer through the
rows of its own group: a module that concatenates its losses task by task (instead of in batch-row
order), or couples rows (batch norm, a normaliser with a gradient), gets plausible but wrong
statistics. The probe tells which rows carry which losses' gradients, exactly, with a few
``torch.autograd.grad`` calls on the kept outputs (no weight gradients, no model change):

* a reference ``grad(losses.sum(), outputs)``;
* per base-8 digit ``d`` of each row's group index ``g``, ``grad(losses, outputs,
  grad_outputs=2 ** digit_d(g))``. Where a batch row's gradient comes from one group, its probe
  gradient is the reference times ``2 ** digit_d`` of *that* group, exactly (a power-of-two
  scaling is exact in floating point), so the digits spell the group whose loss reaches the row.

Cost: ``1 + ceil(log8(groups))`` partial backwards from the loss to the probed layers, once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

_BASE = 8  # powers of two up to 2**7: no overflow even in fp16
_TOL = 0.05  # of the one-group fit: relative residual, and log2 distance to a power of two


class RowAlignment(NamedTuple):
    """Outcome of :func:`check_row_alignment`.

    Attributes:
        checked_rows: Batch rows with a non-zero gradient at the probed layers (``0``: nothing
            to check in this step, e.g. every loss had a zero gradient).
        layer: The first probed layer with a misaligned row, or ``None`` if all rows align.
        row: That batch row (the row of the layer's input).
        source: The row of ``losses`` (first of its group) whose gradient flows through ``row``;
            ``-1`` when the losses of several groups flow through it.
    """

    checked_rows: int
    layer: str | None = None
    row: int = -1
    source: int = -1


def check_row_alignment(
    losses: Tensor, group_ids: Tensor, outputs: dict[str, Tensor]
) -> RowAlignment:
    """Find a batch row through which a loss of another group flows, at any probed layer.

    Call before the training backward (the graph is retained); run it inside
    ``TaskGradCapture.paused()`` so the probe's backwards are not captured. Outputs below a
    reentrant activation checkpoint (whose backward refuses ``autograd.grad``) are left out.

    Args:
        losses: ``[N]`` per-row losses in the autograd graph.
        group_ids: ``[N]`` long; rows with equal ids may share gradients.
        outputs: ``{layer name: output}`` from the forward that produced ``losses``. An
            output with ``N`` rows is checked row by row; one with a row per group (fewer than
            ``N``: a shared prompt encoded once per group) is checked group by group, row ``i``
            being the group with the ``i``-th smallest id; others are ignored.

    Returns:
        A :class:`RowAlignment`.

    Example::

        >>> layer = torch.nn.Linear(2, 2)
        >>> h = layer(torch.randn(4, 2))  # [4, 2]
        >>> per_row = h.square().sum(1)  # [4] in batch-row order
        >>> check_row_alignment(per_row, torch.arange(4), {"layer": h})
        RowAlignment(checked_rows=4, layer=None, row=-1, source=-1)
        >>> check_row_alignment(per_row[[0, 2, 1, 3]], torch.arange(4), {"layer": h})
        RowAlignment(checked_rows=4, layer='layer', row=1, source=2)
    """
    n = losses.shape[0]
    if n == 0 or not losses.requires_grad:
        return RowAlignment(0)
    _, group = torch.unique(group_ids, return_inverse=True)  # [N] in [0, G)
    group = group.to(losses.device)
    num_groups = int(group.max()) + 1
    by_group = torch.arange(num_groups, device=losses.device)  # rows of a per-group output
    names = [
        name
        for name, out in outputs.items()
        if out.dim() and (out.shape[0] == n or out.shape[0] == num_groups)
    ]
    if not names:
        return RowAlignment(0)
    names, ref_grads = _reference(losses, names, outputs)
    if not names:
        return RowAlignment(0)
    tensors = [outputs[name] for name in names]
    expected = [group if outputs[name].shape[0] == n else by_group for name in names]
    digits = 1
    while _BASE**digits < num_groups:
        digits += 1
    refs = _row_grads(ref_grads, [e.shape[0] for e in expected])
    code = [torch.zeros_like(e) for e in expected]
    mixed = [torch.zeros(e.shape, dtype=torch.bool, device=losses.device) for e in expected]
    for d in range(digits):
        digit = torch.div(group, _BASE**d, rounding_mode="floor") % _BASE  # [N]
        scale = torch.pow(2.0, digit.to(torch.float64)).to(losses.dtype)  # [N]
        probes = torch.autograd.grad(
            losses, tensors, grad_outputs=scale, retain_graph=True, allow_unused=True
        )
        rows = [e.shape[0] for e in expected]
        for i, (ref, probe) in enumerate(zip(refs, _row_grads(probes, rows), strict=True)):
            if ref is None or probe is None:
                continue
            ref_sq = (ref * ref).sum(1)  # [N]
            ratio = (probe * ref).sum(1) / ref_sq.clamp_min(torch.finfo(ref.dtype).tiny)  # [N]
            residual = (probe - ratio[:, None] * ref).norm(dim=1)  # [N]
            exponent = torch.log2(ratio.clamp_min(torch.finfo(ref.dtype).tiny))
            found = exponent.round()
            one_group = (
                ((exponent - found).abs() < _TOL)
                & (residual <= _TOL * probe.norm(dim=1))
                & (found >= 0)
                & (found < _BASE)
            )
            code[i] += found.clamp(0, _BASE - 1).long() * _BASE**d
            mixed[i] |= ~one_group
    checked = 0
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        informative = ((ref * ref).sum(1) > 0) & torch.isfinite(ref).all(1)  # [R]
        checked = max(checked, int(informative.sum()))
        bad = informative & (mixed[i] | (code[i] != expected[i]))
        if bad.any():
            row = int(bad.nonzero()[0])
            source = -1
            if not bool(mixed[i][row]) and int(code[i][row]) < num_groups:
                source = int((group == code[i][row]).nonzero()[0])
            return RowAlignment(int(informative.sum()), names[i], row, source)
    return RowAlignment(checked)


def _reference(
    losses: Tensor, names: list[str], outputs: dict[str, Tensor]
) -> tuple[list[str], tuple[Tensor | None, ...]]:
    """``grad(losses.sum(), outputs)`` for the outputs autograd can reach: not those below a
    reentrant activation checkpoint, whose backward refuses ``autograd.grad``."""
    try:
        tensors = [outputs[n] for n in names]
        return names, torch.autograd.grad(
            losses.sum(), tensors, retain_graph=True, allow_unused=True
        )
    except RuntimeError as err:
        if "reentrant" not in str(err):
            raise
    reachable, grads = [], []
    for name in names:
        try:
            (grad,) = torch.autograd.grad(
                losses.sum(), [outputs[name]], retain_graph=True, allow_unused=True
            )
        except RuntimeError as err:
            if "reentrant" not in str(err):
                raise
            continue
        reachable.append(name)
        grads.append(grad)
    return reachable, tuple(grads)


def _row_grads(grads: tuple[Tensor | None, ...], rows: list[int]) -> list[Tensor | None]:
    """Each gradient as ``[R, P]`` fp32 (``None`` where the loss does not reach the layer)."""
    return [
        None if g is None else g.reshape(r, -1).float() for g, r in zip(grads, rows, strict=True)
    ]
