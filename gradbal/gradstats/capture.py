"""Each segment's share of the weight gradient, captured by module hooks in the ONE training backward.

A forward hook on each measured layer keeps the layer's input and registers a hook on the output
tensor; when the training backward reaches that output, the hook forms every segment's weight (and
bias) gradient from the input and the output gradient, adds it to fp32 share buffers, and drops the
input. No extra backward, no ``retain_graph``, no second forward, and the training gradients are
not touched.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradbal.gradstats._layer_grads import (
    SegmentPlan,
    accumulate_dense,
    accumulate_embedding,
    block_slots,
    in_slots,
    make_plan,
)
from gradbal.gradstats._measured_layers import MeasuredLayer, resolve_layers
from gradbal.gradstats._row_mismatch import row_mismatch_reason
from gradbal.gradstats.segments import count_groups_per_segment, group_segment_ids

# Probes in progress (`TaskGradCapture.paused`). Process-wide, not per thread: autograd runs
# hooks on its own device threads.
_PAUSED = [0]


class TaskGradCapture:
    """Capture each segment's share of the gradient of the selected layers during training.

    Call :meth:`set_segments` once per backward (before the forward, or after it and before the
    backward), run the normal training forward and backward, then read :meth:`gram` (inner
    products of the segments' gradients, summed over the measured parameters) and
    :meth:`groups_per_segment`, feed them to :func:`gradbal.gradstats.task_grad_stats`, and call
    :meth:`reset`. Shares add up over every backward until :meth:`reset`, so gradient accumulation
    gives the shares of the accumulated gradient.

    Supported layers: ``nn.Linear`` (weight and bias), transformers' GPT-2 ``Conv1D`` (weight
    ``[in, out]``) and ``nn.Embedding`` (not with ``scale_grad_by_freq``). Other selected modules
    are listed in :attr:`skipped` with the reason. Every module sharing a measured parameter (a
    tied ``lm_head`` / embedding) is measured too, so a share is always of the whole parameter's
    gradient. Rows are the leading dimension of each measured layer's input (batch-first, one
    sample per row; packed sequences are not split), or one row per group when ``group_ids``
    are given: a forward that encodes each group's shared prompt once and repeats its KV cache
    for the group's rows (GRPO's shared-prompt forward) feeds the prompt layers one row per
    group, row ``i`` being the group with the ``i``-th smallest id, and those rows' gradients are
    the group's segment's. A layer whose inputs do not have one row per
    batch row (GPT-2's position embedding, fed ``[1, T]``; a head applied row by row,
    ``head(h[i])``; a per-task head on ``h[task_ids == k]``) is moved to :attr:`skipped` with a
    warning naming the cause at its first backward, and its shares are discarded. If no measured
    layer was captured since :meth:`reset`, :meth:`gram` is NaN (never a zero that looks like a
    measurement); :meth:`missed_layers` says why.

    Works with bf16/fp16 models (shares are accumulated in fp32, or fp64 for fp64 models), with
    activation checkpointing (reentrant or not: a recomputed forward's hooks never double count),
    and with frozen layers (``include_frozen=True``: the gradient the frozen weight *would* have,
    available whenever the layer's output requires grad, e.g. LoRA base weights). Under DDP the
    shares are rank-local; reduce the statistic, not the shares (see ``task_grad_stats``).
    Sharded models work the same way: FSDP2 (``fully_shard``), FSDP1 (``use_orig_params=True``;
    selections look through ``_fsdp_wrapped_module``, ``_checkpoint_wrapped_module`` and
    ``_orig_mod``) and ZeRO-3 placeholders. Shares are full-shape (the layer's declared sizes,
    not the flat or empty parameter's) and live on the gradient's device.

    Memory: ``S`` fp32 copies of the measured parameters until :meth:`reset`, plus each measured
    layer's input until its backward ran (autograd usually keeps the same tensor anyway; under
    activation checkpointing it is an extra copy for the measured layers only).

    Args:
        model: The model whose layers are measured (any wrapper: peft, DDP).
        selection: ``"last_attention_block"``, ``"last_block"``, ``"all_linear"``,
            ``"trainable"`` or a regular expression on module names (see ``param_selectors``).
        include_frozen: Also measure parameters with ``requires_grad=False``.

    Raises:
        ValueError: If the selection has no measurable layer (the message lists what it skipped).

    Attributes:
        skipped: ``{module name: reason}`` for the selected modules that are not measured
            (unsupported or frozen at construction, or dropped at a backward).

    Example::

        >>> from gradbal.gradstats import task_grad_stats
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> capture = TaskGradCapture(model, selection=r"^2$")
        >>> capture.measured_params
        ['2.weight', '2.bias']
        >>> segments = torch.tensor([0, 1, 0, 1, 3, 3])  # 2 tasks x halves A/B
        >>> group_ids = torch.tensor([0, 1, 2, 3, 4, 4])  # task 1 has a single group
        >>> with capture:
        ...     capture.set_segments(segments, num_segments=4, group_ids=group_ids)
        ...     model(torch.randn(6, 3)).sum().backward()
        >>> shares = capture.segment_grads()["2.weight"]  # [4, 1, 4]
        >>> torch.allclose(shares.sum(0), model[2].weight.grad)
        True
        >>> stats = task_grad_stats(capture.gram(), capture.groups_per_segment())
        >>> stats.valid
        tensor([ True, False])
        >>> capture.reset()
    """

    def __init__(
        self,
        model: nn.Module,
        selection: str = "last_attention_block",
        *,
        include_frozen: bool = False,
    ) -> None:
        self._layers, self.skipped = resolve_layers(model, selection, include_frozen)
        if not self._layers:
            raise ValueError(
                f"Selection {selection!r} has no measurable layer. Skipped: {self.skipped}. Pick "
                "a selection with nn.Linear, GPT-2 Conv1D or nn.Embedding layers (or pass "
                "include_frozen=True for frozen ones)."
            )
        self._handles: dict[str, RemovableHandle] = {}
        self._shares: dict[str, Tensor] = {}
        self._spare: dict[str, Tensor] = {}  # buffers kept by reset(keep_buffers=True)
        self._plan: SegmentPlan | None = None
        self._group_plan: SegmentPlan | None = None  # rows = groups (shared-prompt forwards)
        # The share buffers' layout: slot_of[s] is the buffer index holding segment s (None:
        # index s). When every segment is one block of consecutive rows, the slots follow the
        # blocks, so each layer's shares are one baddbmm_ into the buffer (no index_add_).
        self._slot_of: Tensor | None = None
        self._segment_plans: tuple[SegmentPlan, SegmentPlan | None] | None = None
        self._groups: Tensor | None = None
        self._warned: set[str] = set()
        self._pending: dict[str, list[int | None]] = {}  # rows of forwards awaiting backward
        self._called: set[str] = set()  # since reset: forward ran with grad enabled
        self._no_grad: set[str] = set()  # since reset: output did not require grad
        self._reached: set[str] = set()  # since reset: shares captured
        self._kept: dict[str, Tensor] | None = None  # first output per layer, when keeping

    @property
    def measured_layers(self) -> list[str]:
        """Qualified names of the measured modules."""
        return list(self._layers)

    @property
    def measured_params(self) -> list[str]:
        """Qualified names of the measured parameters (a tied parameter appears once)."""
        names = (n for layer in self._layers.values() for n in (layer.weight, layer.bias))
        return list(dict.fromkeys(n for n in names if n is not None))

    @property
    def captured_layers(self) -> list[str]:
        """Measured layers whose shares were captured since the last :meth:`reset`."""
        return [name for name in self._layers if name in self._reached]

    def missed_layers(self) -> dict[str, str]:
        """``{layer: why}`` for the measured layers not captured since the last :meth:`reset`.

        A layer that was not called, or whose output the backward did not reach, had a zero
        gradient in those steps; one whose output did not require grad has no capturable one.
        """
        out = {}
        for name in self._layers:
            if name in self._reached:
                continue
            if name in self._no_grad:
                out[name] = "its output did not require grad (nothing upstream is trainable)"
            elif name in self._called:
                out[name] = "the backward did not reach its output (the output is not in the loss)"
            else:
                out[name] = "it was not called with grad enabled in the training step"
        return out

    def keep_outputs(self) -> None:
        """Keep the output of each measured layer's first call in the next forward, and of its
        first call with another row count (key ``"<layer> (<R> rows)"``: a shared-prompt forward
        calls the layer once per group row and once per batch row), for a probe of row
        alignment (:func:`gradbal.gradstats.check_row_alignment`)."""
        self._kept = {}

    def take_outputs(self) -> dict[str, Tensor]:
        """Return the outputs kept since :meth:`keep_outputs` (by layer) and stop keeping."""
        kept, self._kept = self._kept or {}, None
        return kept

    @staticmethod
    @contextlib.contextmanager
    def paused() -> Iterator[None]:
        """Backwards run inside (``torch.autograd.grad`` probes) are captured by no capture.

        Every ``TaskGradCapture`` in the process is paused (another monitor's too): the probe's
        backward reaches their hooks as well, which must stay in place for the training backward.
        """
        _PAUSED[0] += 1
        try:
            yield
        finally:
            _PAUSED[0] -= 1

    def attach(self) -> TaskGradCapture:
        """Register the hooks (idempotent); returns ``self``."""
        for name, layer in self._layers.items():
            if name not in self._handles:
                hook = functools.partial(self._on_forward, layer)
                self._handles[name] = layer.module.register_forward_hook(hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        """Remove the hooks. Captured shares stay until :meth:`reset`."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> TaskGradCapture:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.detach()

    def set_segments(
        self, segments: Tensor, num_segments: int, group_ids: Tensor | None = None
    ) -> None:
        """Declare the segment of each row for the next backward.

        Args:
            segments: ``[N]`` long, segment of each batch row in ``[0, num_segments)``, or ``-1``
                to leave the row out. ``N`` is the leading dimension of the measured layers'
                inputs. Any time between the previous backward and this one.
            num_segments: ``S``, constant until :meth:`reset` (``2 * num_tasks`` for halves).
            group_ids: ``[N]`` long, group of each row, to count groups per segment; ``None``
                counts every row as its own group.

        Raises:
            ValueError: On a bad segment tensor, a changed ``num_segments`` or a group split
                across segments.
        """
        if self._groups is not None and self._groups.shape[0] != num_segments:
            raise ValueError(
                f"`num_segments` changed from {self._groups.shape[0]} to {num_segments} before "
                "`reset()`. Call `reset()` after reading the statistics of a step."
            )
        plan = make_plan(segments, num_segments)
        group_plan, per_group = None, None
        if group_ids is None:
            counts = torch.tensor(plan.counts, device=segments.device)
        else:
            counts = count_groups_per_segment(segments, group_ids, num_segments)
            per_group = group_segment_ids(segments, group_ids)  # [G], G <= N
            if per_group.shape[0] < plan.num_rows:
                group_plan = make_plan(per_group, num_segments)
        self._groups = counts if self._groups is None else self._groups + counts
        self._segment_plans = (plan, group_plan)
        if not self._shares:  # no share captured yet: the buffers' layout is free to choose
            self._slot_of = block_slots(plan)
        if self._slot_of is not None:  # name the segments by the buffer slots holding them
            plan = make_plan(in_slots(segments, self._slot_of), num_segments)
            if group_plan is not None and per_group is not None:
                group_plan = make_plan(in_slots(per_group, self._slot_of), num_segments)
        self._plan, self._group_plan = plan, group_plan

    def groups_per_segment(self) -> Tensor:
        """``[S]`` long: groups per segment, summed over the ``set_segments`` calls since reset."""
        if self._groups is None:
            raise RuntimeError("No segments since the last `reset()`. Call `set_segments` first.")
        return self._groups

    def segment_grads(self) -> dict[str, Tensor]:
        """``{param name: [S, *shape]}``: each segment's gradient share (live buffers), in the
        layer's declared shape (``[out, in]`` also when the parameter is a shard).

        A parameter no backward reached yet is absent. ``reset()`` releases (does not zero) the
        buffers, so returned tensors stay valid.
        """
        self._segment_layout()
        return dict(self._shares)

    def _segment_layout(self) -> None:
        """Put the buffers in segment order in place (buffer ``s`` holds segment ``s``)."""
        if self._slot_of is None:
            return
        for share in self._shares.values():
            share.copy_(share.index_select(0, self._slot_of))
        self._slot_of = None
        if self._segment_plans is not None:
            self._plan, self._group_plan = self._segment_plans

    def gram(self, loss_scale: float = 1.0) -> Tensor:
        """Return ``[S, S]`` fp32 (fp64 for fp64 models) inner products of the segments' shares.

        Entry ``(s, r)`` is ``<g_s, g_r>`` summed over the measured parameters (inner products
        add up over parameter blocks). All NaN if no measured layer was captured since
        :meth:`reset` (every layer dropped, or none reached): nothing was measured.

        Args:
            loss_scale: The fp16 loss scale the backward ran with (``scaler.get_scale()``); the
                Gram is divided by its square. Check ``isfinite`` on overflow steps.
        """
        if self._groups is None:
            raise RuntimeError("No segments since the last `reset()`. Call `set_segments` first.")
        size = self._groups.shape[0]
        dtype = functools.reduce(
            torch.promote_types, [s.dtype for s in self._shares.values()], torch.float32
        )
        gram = torch.zeros(size, size, dtype=dtype, device=self._groups.device)
        if not self._shares:
            return gram.fill_(float("nan"))
        for share in self._shares.values():
            flat = share.flatten(1)  # [S, P]
            gram += (flat @ flat.T).to(gram)
        if self._slot_of is not None:  # slots -> segments
            gram = gram[self._slot_of][:, self._slot_of]
        return gram / loss_scale**2

    def reset(self, keep_buffers: bool = False) -> None:
        """Forget shares, group counts, segments and the step's call records (call after reading
        a step's statistics).

        Args:
            keep_buffers: Keep the share buffers' memory for the next backward, which zeroes and
                reuses them instead of allocating new ones (faster when every step is measured;
                the buffers then stay allocated between steps, and tensors returned by
                :meth:`segment_grads` are overwritten by the next capture). By default they are
                released.
        """
        self._spare = self._shares if keep_buffers else {}
        self._shares = {}
        self._groups = None
        self._plan = None
        self._group_plan = None
        self._slot_of = None
        self._segment_plans = None
        self._pending = {}
        self._called, self._no_grad, self._reached = set(), set(), set()
        self._kept = None

    def _on_forward(
        self,
        layer: MeasuredLayer,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Any,
    ) -> None:
        if not torch.is_grad_enabled() or layer.name not in self._layers:
            return  # e.g. the no-grad first pass of reentrant checkpointing
        self._called.add(layer.name)
        if not (isinstance(output, Tensor) and output.requires_grad):
            self._no_grad.add(layer.name)
            self._warn_once(
                layer.name,
                f"Layer `{layer.name}` ran with grad enabled but its output does not require grad, "
                "so its gradient cannot be captured in this step (nothing upstream is trainable).",
            )
            return
        x = args[0] if args else kwargs["input"]
        batched = x.dim() >= (1 if layer.kind == "embedding" else 2)
        rows = x.shape[0] if batched else None  # None: a dense layer fed one unbatched row
        self._pending.setdefault(layer.name, []).append(rows)
        if self._kept is not None:  # the first call, and the first of another row count
            key = layer.name
            if key in self._kept and self._kept[key].shape[:1] != output.shape[:1]:
                key = f"{layer.name} ({rows} rows)"
            self._kept.setdefault(key, output)
        box = [x]  # emptied by the backward hook, so the input is freed as soon as it ran
        output.register_hook(functools.partial(self._on_backward, layer, box, x._version, rows))

    def _on_backward(
        self, layer: MeasuredLayer, box: list[Tensor], version: int, rows: int | None, dy: Tensor
    ) -> None:
        if _PAUSED[0]:
            return  # a probe's backward: the training backward still needs the input
        x = box.pop()
        plan = self._plan
        if plan is None:
            raise RuntimeError(
                f"Backward reached measured layer `{layer.name}` without segments. Call "
                "`capture.set_segments(segments, num_segments)` before every backward."
            )
        if layer.name not in self._layers:
            return
        calls = self._pending.get(layer.name, [])
        if self._group_plan is not None and rows == self._group_plan.num_rows != plan.num_rows:
            plan = self._group_plan  # one row per group: a shared prompt encoded once
        if rows != plan.num_rows or dy.shape[0] != plan.num_rows:
            reason = row_mismatch_reason(calls or [rows], tuple(x.shape), plan.num_rows)
            self._drop(layer.name, reason)
            return
        if rows in calls:
            calls.remove(rows)
        if x._version != version:
            raise RuntimeError(
                f"The input of measured layer `{layer.name}` was modified in place after the "
                "forward, so its captured gradient would be wrong. Avoid in-place ops on it."
            )
        self._reached.add(layer.name)
        weight = None
        if layer.weight is not None:
            weight = self._buffer(layer.weight, layer.weight_param, layer.weight_shape, plan, dy)
        if layer.kind == "embedding":
            if weight is not None:
                accumulate_embedding(weight, x, dy, plan, layer.padding_idx)
            return
        bias = None
        if layer.bias is not None and layer.bias_param is not None and layer.bias_shape:
            bias = self._buffer(layer.bias, layer.bias_param, layer.bias_shape, plan, dy)
        accumulate_dense(weight, bias, x, dy, plan, weight_is_in_out=layer.kind == "conv1d")

    def _buffer(
        self, name: str, param: Tensor, shape: tuple[int, ...], plan: SegmentPlan, dy: Tensor
    ) -> Tensor:
        share = self._shares.get(name)
        if share is None:
            # The layer's declared shape, not the parameter's: under FSDP1 or ZeRO-3 it is a flat
            # shard or an empty placeholder. On the gradient's device: with FSDP2's CPU offload
            # the parameter lives on the CPU while the backward runs on the GPU.
            dtype = torch.promote_types(param.dtype, torch.float32)
            size = (plan.num_segments, *shape)
            spare = self._spare.pop(name, None)
            if spare is not None and (spare.shape, spare.dtype, spare.device) == (
                size,
                dtype,
                dy.device,
            ):
                share = spare.zero_()  # kept by reset(keep_buffers=True)
            else:
                share = torch.zeros(size, dtype=dtype, device=dy.device)
            self._shares[name] = share
        return share

    def buffer_bytes(self, num_segments: int) -> int:
        """Bytes of the share buffers for ``num_segments`` segments (allocated at the first
        backward): ``S x`` the measured weights' and biases' declared sizes, in fp32 (fp64 for
        fp64 weights). Under sharding every rank holds the full, unsharded buffers."""
        total = 0
        for layer in self._layers.values():
            for name, param, shape in (
                (layer.weight, layer.weight_param, layer.weight_shape),
                (layer.bias, layer.bias_param, layer.bias_shape),
            ):
                if name is None or param is None or shape is None:
                    continue
                item = torch.promote_types(param.dtype, torch.float32).itemsize
                total += num_segments * math.prod(shape) * item
        return total

    def _drop(self, name: str, reason: str) -> None:
        layer = self._layers.pop(name)
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.remove()
        self.skipped[name] = reason
        self._pending.pop(name, None)
        self._reached.discard(name)
        warnings.warn(f"TaskGradCapture no longer measures `{name}`: {reason}.", stacklevel=2)
        params = {layer.weight, layer.bias} - {None}
        for key in params:
            self._shares.pop(key, None)  # type: ignore[arg-type]
        for other in list(self._layers.values()):
            if params & {other.weight, other.bias}:
                self._drop(other.name, f"it shares a parameter with `{name}`, which is skipped")

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(message, stacklevel=3)
