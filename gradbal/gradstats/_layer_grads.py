"""Per-segment weight gradients of one layer from its input and output gradient (private).

For a dense layer ``y = x W^T + b`` the weight gradient is ``sum_rows dy^T x``; restricting the sum
to one segment's rows gives that segment's share. When the segments come in a few runs of
consecutive rows (whole groups, as GRPO's completions of one prompt), the rows are cut into equal
blocks, each inside one run, and one batched GEMM gives every block's gradient, added to its
segment's share by one ``index_add_`` (or one ``baddbmm_`` when block ``s`` is segment ``s``: when
each segment is one block, the capture lays its buffers out in block order to get this case);
when that would need more than two share buffers' worth of block gradients, each run is one GEMM
over a slice of the input. Otherwise rows are gathered once in segment order, so each segment is
one GEMM over a contiguous slice. Either way the total cost is about one extra weight-gradient
GEMM; the batched form saves the per-call overhead that dominates on the many small matrices of
LoRA adapters (two calls per matrix instead of one per run), and the gather, which copies the
input, is avoided whenever the segments come in runs. Embedding shares are one ``index_add_``
over ``segment * vocab + token``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class SegmentPlan(NamedTuple):
    """Rows of one backward, grouped by segment.

    Attributes:
        num_rows: ``N``, the leading dimension every measured layer's input must have.
        num_segments: ``S``.
        order: ``[M]`` long, the kept rows (segment >= 0) sorted by segment; ``None`` when that is
            all rows in order (no gather needed).
        sorted_segments: ``[M]`` long, the segment of each row of ``order``.
        counts: Rows per segment, ``S`` Python ints (so slicing needs no host sync).
        runs: ``(start, stop, segment)`` of each run of consecutive rows in one segment (rows
            of segment ``-1`` left out), when there are at most ``2 * S`` runs (whole groups of
            rows: GRPO's completions of one prompt); ``None`` otherwise. A layer's share is then
            one GEMM per run over a slice of its input, with no gather of the rows.
        blocks: The runs cut into equal blocks of consecutive rows, when there are runs and at
            most ``2 * S`` blocks: one batched GEMM over the blocks gives all shares; ``None``
            otherwise.
    """

    num_rows: int
    num_segments: int
    order: Tensor | None
    sorted_segments: Tensor
    counts: list[int]
    runs: list[tuple[int, int, int]] | None = None
    blocks: Blocks | None = None


class Blocks(NamedTuple):
    """All ``N`` rows cut into ``num_blocks`` blocks of ``rows`` consecutive rows, each block inside
    one segment (or left out).

    Attributes:
        rows: Rows per block.
        num_blocks: Blocks, ``N / rows``.
        kept: ``[K]`` long, the blocks not left out (segment >= 0); ``None`` when all are kept.
        segments: ``[K]`` long, the segment of each kept block.
        identity: Every block kept and block ``s`` is segment ``s`` (``num_blocks == S``).
    """

    rows: int
    num_blocks: int
    kept: Tensor | None
    segments: Tensor
    identity: bool


def make_plan(segments: Tensor, num_segments: int) -> SegmentPlan:
    """Validate ``segments [N]`` (values in ``[-1, num_segments)``) and group its rows."""
    if segments.dim() != 1 or segments.dtype != torch.long:
        raise ValueError(
            f"`segments` must be a 1-D LongTensor [N]. Got dtype {segments.dtype} and shape "
            f"{tuple(segments.shape)}."
        )
    if num_segments < 1:
        raise ValueError(f"`num_segments` must be >= 1. Got {num_segments}.")
    low, high = (int(v) for v in torch.aminmax(segments)) if segments.numel() else (0, 0)
    if low < -1 or high >= num_segments:
        raise ValueError(
            f"Segment ids must be in [-1, {num_segments}) (-1 = ignore the row). Got values from "
            f"{low} to {high}. Pass `num_segments` = 2 * num_tasks for half splits."
        )
    sorted_segments, order = torch.sort(segments, stable=True)
    counts = torch.bincount(segments + 1, minlength=num_segments + 1).tolist()
    ignored = counts[0]
    in_order = ignored == 0 and bool(torch.equal(sorted_segments, segments))
    runs = _runs(segments, max_runs=2 * num_segments)
    return SegmentPlan(
        num_rows=segments.shape[0],
        num_segments=num_segments,
        order=None if in_order else order[ignored:],
        sorted_segments=sorted_segments[ignored:],
        counts=counts[1:],
        runs=runs,
        blocks=None if runs is None else _blocks(segments, runs, max_blocks=2 * num_segments),
    )


def block_slots(plan: SegmentPlan) -> Tensor | None:
    """A layout of the share buffers in which the plan's blocks are the segments in order:
    ``slot_of [S]`` (segment ``s`` kept in buffer ``slot_of[s]``) when every segment is exactly one
    block of consecutive rows in another order (GRPO's half splits with one group per half), so
    one ``baddbmm_`` adds every block to its buffer; ``None`` (buffer ``s`` = segment ``s``)
    otherwise."""
    blocks = plan.blocks
    if blocks is None or blocks.identity or blocks.kept is not None:
        return None
    if blocks.num_blocks != plan.num_segments or not all(c > 0 for c in plan.counts):
        return None  # a segment with several blocks, or none
    slot_of = torch.empty_like(blocks.segments)
    slot_of[blocks.segments] = torch.arange(blocks.num_blocks, device=slot_of.device)
    return slot_of


def in_slots(segments: Tensor, slot_of: Tensor) -> Tensor:
    """``segments`` renamed to their buffer slots (``-1``, a row left out, stays ``-1``)."""
    return torch.where(segments >= 0, slot_of[segments.clamp(min=0)], segments)


def _blocks(segments: Tensor, runs: list[tuple[int, int, int]], max_blocks: int) -> Blocks | None:
    """The largest equal blocks of rows with every run boundary on a block boundary, or ``None``
    if there would be more than ``max_blocks`` (or no rows)."""
    n = segments.shape[0]
    if not runs:
        return None
    size = math.gcd(n, *(bound for run in runs for bound in run[:2]))
    count = n // size
    if count > max_blocks:
        return None
    per_block = segments[::size]  # [count]; a block's rows share its first row's segment
    keep = per_block >= 0
    all_kept = bool(keep.all())
    kept = None if all_kept else keep.nonzero().flatten()
    kept_segments = per_block if kept is None else per_block[kept]
    identity = all_kept and torch.equal(per_block, torch.arange(count, device=per_block.device))
    return Blocks(size, count, kept, kept_segments, identity and count > 0)


def _runs(segments: Tensor, max_runs: int) -> list[tuple[int, int, int]] | None:
    """``(start, stop, segment)`` of each run of equal segments (``-1`` runs left out), or
    ``None`` if there are more than ``max_runs`` kept runs."""
    n = segments.shape[0]
    if n == 0:
        return []
    starts = torch.ones(n, dtype=torch.bool, device=segments.device)
    starts[1:] = segments[1:] != segments[:-1]
    if int(starts.sum()) > 2 * max_runs + 1:  # kept and -1 runs alternate at worst
        return None
    first = starts.nonzero().flatten().tolist()
    values = segments[starts].tolist()
    bounds = [*first[1:], n]
    runs = [(a, b, v) for a, b, v in zip(first, bounds, values, strict=True) if v >= 0]
    return runs if len(runs) <= max_runs else None


def _rows(t: Tensor, plan: SegmentPlan) -> Tensor:
    return t if plan.order is None else t.index_select(0, plan.order)


def accumulate_dense(
    weight_shares: Tensor | None,
    bias_shares: Tensor | None,
    x: Tensor,
    dy: Tensor,
    plan: SegmentPlan,
    *,
    weight_is_in_out: bool,
) -> None:
    """Add each segment's weight / bias gradient of a dense layer to the share buffers in place.

    Args:
        weight_shares: ``[S, out, in]`` (``nn.Linear``) or ``[S, in, out]`` (``Conv1D``), or
            ``None`` if the weight is not measured.
        bias_shares: ``[S, out]`` or ``None``.
        x: ``[N, ..., in]`` layer input.
        dy: ``[N, ..., out]`` gradient of the layer output.
        plan: Rows grouped by segment.
        weight_is_in_out: ``True`` for GPT-2 ``Conv1D`` (weight ``[in, out]``).
    """
    buffer = weight_shares if weight_shares is not None else bias_shares
    kept = plan.sorted_segments.shape[0]
    if buffer is None or kept == 0:
        return
    if plan.blocks is not None:
        args = (weight_shares, bias_shares, x, dy, plan.blocks, buffer.dtype, weight_is_in_out)
        if torch.is_autocast_enabled(dy.device.type):
            # the shares' precision, also when the backward runs inside an autocast region
            with torch.autocast(dy.device.type, enabled=False):
                _accumulate_blocks(*args)
        else:
            _accumulate_blocks(*args)
        return
    if plan.runs is not None:
        _accumulate_runs(
            weight_shares, bias_shares, x, dy, plan.runs, buffer.dtype, weight_is_in_out
        )
        return
    dy_rows = _rows(dy, plan).to(buffer.dtype)  # [M, ..., out]
    if weight_shares is not None:
        x_flat = _rows(x, plan).to(buffer.dtype).flatten(0, -2)  # [M*T, in]
        dy_flat = dy_rows.flatten(0, -2)  # [M*T, out]
        tokens = x_flat.shape[0] // kept
        sizes = [count * tokens for count in plan.counts]
        for s, (xs, dys) in enumerate(zip(x_flat.split(sizes), dy_flat.split(sizes), strict=True)):
            if xs.shape[0]:
                a, b = (xs.T, dys) if weight_is_in_out else (dys.T, xs)
                weight_shares[s].addmm_(a, b)
    if bias_shares is not None:
        row_sums = dy_rows.reshape(dy_rows.shape[0], -1, dy_rows.shape[-1]).sum(1)  # [M, out]
        bias_shares.index_add_(0, plan.sorted_segments, row_sums)


def _accumulate_blocks(
    weight_shares: Tensor | None,
    bias_shares: Tensor | None,
    x: Tensor,
    dy: Tensor,
    blocks: Blocks,
    dtype: torch.dtype,
    weight_is_in_out: bool,
) -> None:
    """:func:`accumulate_dense` over equal blocks of rows: one batched GEMM for all blocks."""
    dy_blocks = dy.to(dtype).reshape(blocks.num_blocks, -1, dy.shape[-1])  # [B, rows*T, out]
    if weight_shares is not None:
        x_blocks = x.to(dtype).reshape(blocks.num_blocks, -1, x.shape[-1])  # [B, rows*T, in]
        a, b = (
            (x_blocks.transpose(1, 2), dy_blocks)
            if weight_is_in_out
            else (dy_blocks.transpose(1, 2), x_blocks)
        )
        if blocks.identity:
            weight_shares.baddbmm_(a, b)
        else:
            per_block = torch.bmm(a, b)  # [B, out, in]: at most 2 share buffers (B <= 2 S)
            if blocks.kept is not None:
                per_block = per_block.index_select(0, blocks.kept)
            weight_shares.index_add_(0, blocks.segments, per_block)
    if bias_shares is not None:
        sums = dy_blocks.sum(1)  # [B, out]
        if blocks.kept is not None:
            sums = sums.index_select(0, blocks.kept)
        bias_shares.index_add_(0, blocks.segments, sums)


def _accumulate_runs(
    weight_shares: Tensor | None,
    bias_shares: Tensor | None,
    x: Tensor,
    dy: Tensor,
    runs: list[tuple[int, int, int]],
    dtype: torch.dtype,
    weight_is_in_out: bool,
) -> None:
    """:func:`accumulate_dense` over runs of rows: slices of the inputs, no gather."""
    rows = dy.shape[0]
    dy_flat = dy.to(dtype).reshape(-1, dy.shape[-1])  # [N*T, out]
    tokens = dy_flat.shape[0] // rows
    x_flat = x.to(dtype).reshape(-1, x.shape[-1]) if weight_shares is not None else None
    for start, stop, segment in runs:
        dys = dy_flat[start * tokens : stop * tokens]  # [run*T, out]
        if weight_shares is not None and x_flat is not None:
            xs = x_flat[start * tokens : stop * tokens]  # [run*T, in]
            a, b = (xs.T, dys) if weight_is_in_out else (dys.T, xs)
            weight_shares[segment].addmm_(a, b)
        if bias_shares is not None:
            bias_shares[segment] += dys.sum(0)


def accumulate_embedding(
    weight_shares: Tensor, ids: Tensor, dy: Tensor, plan: SegmentPlan, padding_idx: int | None
) -> None:
    """Add each segment's embedding-weight gradient ``[S, V, D]`` in place (one ``index_add_``).

    Args:
        weight_shares: ``[S, V, D]`` contiguous.
        ids: ``[N, ...]`` long token ids.
        dy: ``[N, ..., D]`` gradient of the embedding output.
        plan: Rows grouped by segment.
        padding_idx: The embedding's ``padding_idx`` (its row gets no gradient), or ``None``.
    """
    num_segments, vocab, dim = weight_shares.shape
    if plan.sorted_segments.shape[0] == 0:
        return
    id_rows = _rows(ids, plan).reshape(plan.sorted_segments.shape[0], -1)  # [M, T]
    flat_index = (plan.sorted_segments[:, None] * vocab + id_rows).reshape(-1)  # [M*T]
    dy_flat = _rows(dy, plan).to(weight_shares.dtype).reshape(-1, dim)  # [M*T, D]
    weight_shares.view(num_segments * vocab, dim).index_add_(0, flat_index, dy_flat)
    if padding_idx is not None:
        weight_shares[:, padding_idx].zero_()
