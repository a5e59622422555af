"""check_row_alignment: which row of `losses` flows through which batch row, found exactly."""

from __future__ import annotations

import pytest
import torch
from _gradstats_helpers import batch, row_losses, tiny_model
from torch import Tensor, nn

from gradbal.gradstats import TaskGradCapture, check_row_alignment


def _llama_outputs(n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-row losses of a tiny Llama and the outputs of its last attention block's layers."""
    model = tiny_model("llama", dtype=dtype)
    attention = model.model.layers[1].self_attn
    outputs: dict[str, Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, a, out, name=name: outputs.setdefault(name, out))
        for name, module in model.named_modules()
        if name.startswith("model.layers.1.self_attn.") and module in attention.children()
    ]
    losses = row_losses(model, batch(n))
    for handle in handles:
        handle.remove()
    return losses, outputs


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_batch_row_order_passes_and_task_concatenation_is_found(dtype: torch.dtype) -> None:
    losses, outputs = _llama_outputs(6, dtype)
    assert list(outputs) == [f"model.layers.1.self_attn.{p}_proj" for p in "qkvo"]
    ok = check_row_alignment(losses, torch.arange(6), outputs)
    assert ok.layer is None and ok.checked_rows == 6
    task_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    order = torch.argsort(task_ids, stable=True)  # [0, 3, 1, 4, 2, 5]: concatenated by task
    bad = check_row_alignment(losses[order], torch.arange(6), outputs)
    # Batch row 1 is row 2 of the concatenation (task 1's first row).
    assert (bad.layer, bad.row, bad.source) == ("model.layers.1.self_attn.q_proj", 1, 2)


def test_many_groups_are_told_apart_by_every_digit() -> None:
    """Rows 1 and 9 share the first base-8 digit; swapping them is found by the second."""
    losses, outputs = _llama_outputs(20)
    order = torch.arange(20)
    order[[1, 9]] = order[[9, 1]]
    bad = check_row_alignment(losses[order], torch.arange(20), outputs)
    assert (bad.row, bad.source) == (1, 9)
    assert check_row_alignment(losses, torch.arange(20), outputs).layer is None


def test_rows_sharing_a_loss_pass_as_one_group_only() -> None:
    """A pair loss split over its two rows (DPO's chosen and rejected) is fine within a group."""
    layer = nn.Linear(3, 3)
    h = layer(torch.randn(4, 3))  # [4, 3]: pairs (0, 2) and (1, 3)
    pair = (h[:2] * h[2:]).sum(1)  # [2]
    losses = torch.cat([pair, pair]) / 2  # [4] one entry per row
    assert check_row_alignment(losses, torch.tensor([0, 1, 0, 1]), {"l": h}).layer is None
    mixed = check_row_alignment(losses, torch.arange(4), {"l": h})
    assert mixed.layer == "l" and mixed.source == -1


def test_a_loss_that_depends_on_other_rows_is_found() -> None:
    layer = nn.Linear(3, 3)
    h = layer(torch.randn(5, 3))  # [5, 3]
    per_row = h.square().sum(1)  # [5]
    coupled = per_row * per_row.sum()  # the scale has a gradient: every row reaches every loss
    result = check_row_alignment(coupled, torch.arange(5), {"l": h})
    assert result.layer == "l" and result.source == -1
    detached = per_row * per_row.sum().detach()
    assert check_row_alignment(detached, torch.arange(5), {"l": h}).layer is None


def test_nothing_to_check_without_a_gradient_or_a_batch_row_output() -> None:
    layer = nn.Linear(3, 3)
    h = layer(torch.randn(4, 3))
    zero = h.sum(1) * 0  # [4] every row's gradient is zero
    assert check_row_alignment(zero, torch.arange(4), {"l": h}).checked_rows == 0
    shared = layer(torch.randn(1, 3))  # [1, 3]: not one row per sample, ignored
    assert check_row_alignment(h.sum(1) + shared.sum(), torch.arange(4), {"s": shared}) == (
        0,
        None,
        -1,
        -1,
    )


def test_the_probe_leaves_the_capture_and_the_training_gradients_alone() -> None:
    """Inside `paused()`, the probe's backwards reach the hooks but capture nothing."""
    model, input_ids = tiny_model("llama"), batch(4)
    segments = torch.tensor([0, 1, 0, 1])
    reference = TaskGradCapture(model)
    with reference:
        reference.set_segments(segments, 2)
        row_losses(model, input_ids).sum().backward()
    expected = reference.gram()
    model.zero_grad()
    capture, other = TaskGradCapture(model), TaskGradCapture(model)  # e.g. a second monitor
    with capture, other:
        capture.keep_outputs()
        losses = row_losses(model, input_ids)
        capture.set_segments(segments, 2)
        other.set_segments(segments, 2)
        with TaskGradCapture.paused():
            assert (
                check_row_alignment(losses, torch.arange(4), capture.take_outputs()).layer is None
            )
        losses.sum().backward()
    torch.testing.assert_close(capture.gram(), expected)
    torch.testing.assert_close(other.gram(), expected)


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("selection", ["all_linear", "embed_tokens|lm_head"])
def test_probe_under_activation_checkpointing(use_reentrant: bool, selection: str) -> None:
    """Non-reentrant: checked, shares exact. Reentrant: the checkpointed layers' forward runs
    without grad, so nothing is kept there and the probe has nothing to check (no error)."""
    model, input_ids = tiny_model("llama").train(), batch(4)
    segments = torch.tensor([0, 1, 0, 1])
    reference = TaskGradCapture(model, selection)
    with reference:
        reference.set_segments(segments, 2)
        row_losses(model, input_ids).sum().backward()
    model.zero_grad()
    model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
    capture = TaskGradCapture(model, selection)
    with capture:
        capture.keep_outputs()
        losses = row_losses(model, input_ids)
        capture.set_segments(segments, 2)
        kept = capture.take_outputs()
        names = list(kept)
        kept = {n: kept[n] for n in dict.fromkeys([names[0], names[-1]])}
        with TaskGradCapture.paused():
            result = check_row_alignment(losses, torch.arange(4), kept)
        losses.sum().backward()
    assert result.layer is None
    assert result.checked_rows == 4
    torch.testing.assert_close(capture.gram(), reference.gram())
