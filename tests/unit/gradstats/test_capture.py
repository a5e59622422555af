"""TaskGradCapture: captured per-segment shares equal brute-force per-segment autograd.grad."""

from __future__ import annotations

import pytest
import torch
from _gradstats_helpers import batch, brute_force_shares, gram_of, row_losses, tiny_model
from torch import nn

from gradbal.gradstats import TaskGradCapture, half_split_segments

NUM_TASKS = 2
S = 2 * NUM_TASKS


def _segments(num_rows: int, seed: int = 0, ignore_last: bool = True) -> torch.Tensor:
    """Half split of 2 tasks, 2 rows per group; the last row ignored (exercises the gather)."""
    task_ids = torch.arange(num_rows) % NUM_TASKS
    group_ids = torch.arange(num_rows) // 2 * NUM_TASKS + task_ids
    gen = torch.Generator().manual_seed(seed)
    segments = half_split_segments(task_ids, group_ids, NUM_TASKS, generator=gen)
    if ignore_last:
        segments[-1] = -1
    return segments


def _capture_step(
    capture: TaskGradCapture, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """The training loop: per micro-batch, set segments, forward, ONE backward."""
    with capture:
        for input_ids, segments in batches:
            capture.set_segments(segments, S)
            row_losses(model, input_ids).sum().backward()


def _assert_matches_brute_force(
    capture: TaskGradCapture,
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    rtol: float = 1e-5,
) -> None:
    expected = brute_force_shares(model, batches, S, capture.measured_params)
    captured = capture.segment_grads()
    assert set(captured) == set(expected)
    for name, share in captured.items():
        scale = expected[name].abs().max()
        assert scale > 0, name
        torch.testing.assert_close(share.double(), expected[name], rtol=0, atol=rtol * scale)
    gram = capture.gram().double()
    expected_gram = gram_of(expected)
    torch.testing.assert_close(gram, expected_gram, rtol=0, atol=rtol * expected_gram.abs().max())


CASES = [
    ("llama", "last_attention_block", {"q_proj", "k_proj", "v_proj", "o_proj"}),
    ("llama", "last_block", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"}),
    ("llama", "all_linear", {"model.layers.0.mlp.up_proj", "lm_head"}),
    ("llama", r"embed_tokens", {"embed_tokens"}),
    ("qwen2", "last_attention_block", {"q_proj", "k_proj", "v_proj", "o_proj"}),
    ("gpt2", "last_attention_block", {"c_attn", "c_proj"}),
    ("gpt2", "all_linear", {"transformer.h.0.mlp.c_fc", "lm_head"}),
    ("gpt2", r"wte|lm_head", {"wte", "lm_head"}),  # embedding weight tied to lm_head
]


@pytest.mark.parametrize(("family", "selection", "expected_layers"), CASES)
def test_shares_match_brute_force(family: str, selection: str, expected_layers: set[str]) -> None:
    model = tiny_model(family)
    capture = TaskGradCapture(model, selection)
    measured = capture.measured_layers
    assert all(any(e in name for name in measured) for e in expected_layers), measured
    batches = [(batch(7), _segments(7))]
    _capture_step(capture, model, batches)
    _assert_matches_brute_force(capture, model, batches)


def test_last_attention_block_layers() -> None:
    qwen = TaskGradCapture(tiny_model("qwen2"))
    assert qwen.measured_layers == [f"model.layers.1.self_attn.{p}_proj" for p in "qkvo"]
    assert "model.layers.1.self_attn.q_proj.bias" in qwen.measured_params  # Qwen2 q/k/v biases
    gpt2 = TaskGradCapture(tiny_model("gpt2"))
    assert gpt2.measured_layers == ["transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]


def test_tied_embedding_share_is_the_full_tied_gradient() -> None:
    """wte is used by the embedding and by lm_head: both contributions land in one share."""
    model = tiny_model("gpt2")
    capture = TaskGradCapture(model, r"wte|lm_head")
    assert capture.measured_params == ["transformer.wte.weight"]
    _capture_step(capture, model, [(batch(6), _segments(6, ignore_last=False))])
    share = capture.segment_grads()["transformer.wte.weight"]
    torch.testing.assert_close(share.sum(0), model.transformer.wte.weight.grad)


def test_training_gradients_unchanged() -> None:
    model = tiny_model("qwen2")
    input_ids, segments = batch(6), _segments(6)
    row_losses(model, input_ids).sum().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _capture_step(TaskGradCapture(model, "all_linear"), model, [(input_ids, segments)])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=0, atol=0)


def test_gradient_accumulation_adds_micro_batches() -> None:
    model = tiny_model("llama")
    capture = TaskGradCapture(model, "last_block")
    batches = [(batch(6, seed=1), _segments(6, seed=1)), (batch(5, seed=2), _segments(5, seed=2))]
    _capture_step(capture, model, batches)
    _assert_matches_brute_force(capture, model, batches)


def test_segments_may_be_set_after_the_forward() -> None:
    """Lightning's `on_before_backward` knows the rows only after `training_step` ran."""
    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    input_ids, segments = batch(6), _segments(6)
    with capture:
        losses = row_losses(model, input_ids)
        capture.set_segments(segments, S)
        losses.sum().backward()
    _assert_matches_brute_force(capture, model, [(input_ids, segments)])


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_does_not_double_count(use_reentrant: bool) -> None:
    model = tiny_model("llama").train()  # HF checkpoints only in training mode
    model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    capture = TaskGradCapture(model, "last_block")
    forward_calls = []
    q_proj = model.model.layers[1].self_attn.q_proj
    handle = q_proj.register_forward_hook(lambda *args: forward_calls.append(1))
    batches = [(batch(6), _segments(6))]
    _capture_step(capture, model, batches)
    handle.remove()
    assert len(forward_calls) == 2  # the recompute ran the layer's forward hooks again
    model.activation_checkpointing_disable()
    _assert_matches_brute_force(capture, model, batches)


def test_bf16_model_accumulates_in_fp32() -> None:
    model = tiny_model("llama", dtype=torch.bfloat16)
    capture = TaskGradCapture(model)
    batches = [(batch(6), _segments(6))]
    _capture_step(capture, model, batches)
    assert all(s.dtype == torch.float32 for s in capture.segment_grads().values())
    assert capture.gram().dtype == torch.float32
    _assert_matches_brute_force(capture, model, batches, rtol=3e-2)  # bf16 brute force rounds


def test_fp32_model_gram_is_fp32() -> None:
    model = tiny_model("gpt2", dtype=torch.float32)
    capture = TaskGradCapture(model)
    batches = [(batch(6), _segments(6))]
    _capture_step(capture, model, batches)
    assert capture.gram().dtype == torch.float32
    _assert_matches_brute_force(capture, model, batches, rtol=1e-4)


def test_loss_scale_divides_the_gram() -> None:
    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    _capture_step(capture, model, [(batch(6), _segments(6))])
    torch.testing.assert_close(capture.gram(loss_scale=4.0), capture.gram() / 16)


def test_reset_forgets_shares_and_counts() -> None:
    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    _capture_step(capture, model, [(batch(6), _segments(6))])
    first = capture.segment_grads()
    capture.reset()
    assert capture.segment_grads() == {}
    with pytest.raises(RuntimeError, match="set_segments"):
        capture.gram()
    batches = [(batch(6, seed=3), _segments(6, seed=3))]
    _capture_step(capture, model, batches)
    _assert_matches_brute_force(capture, model, batches)  # nothing left from the first step
    assert all(v.abs().sum() > 0 for v in first.values())  # released, not zeroed


def test_reset_keeping_buffers_reuses_them_zeroed() -> None:
    """``reset(keep_buffers=True)``: the next step writes into the same memory, zeroed first,
    so its shares are that step's alone; a plain reset releases them."""
    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    _capture_step(capture, model, [(batch(6), _segments(6))])
    pointers = {k: v.data_ptr() for k, v in capture.segment_grads().items()}
    capture.reset(keep_buffers=True)
    assert capture.segment_grads() == {}
    batches = [(batch(6, seed=3), _segments(6, seed=3))]
    _capture_step(capture, model, batches)
    assert {k: v.data_ptr() for k, v in capture.segment_grads().items()} == pointers
    _assert_matches_brute_force(capture, model, batches)  # zeroed: nothing from the first step
    capture.reset()
    assert capture._spare == {}  # released


def test_shares_in_block_slots_match_brute_force() -> None:
    """Each segment one block of rows in another order (GRPO's half splits with one group per
    half): the buffers are laid out by block. The Gram, read in that layout, and the shares, put
    back in segment order, equal brute force, also over micro-batches in other orders and after
    reading the shares mid-accumulation."""
    model = tiny_model("llama")
    capture = TaskGradCapture(model, "all_linear")
    orders = ([2, 0, 3, 1], [1, 3, 0, 2], [3, 2, 1, 0])
    batches = [
        (batch(8, seed=i), torch.tensor(order).repeat_interleave(2))
        for i, order in enumerate(orders)
    ]
    for i, (input_ids, segments) in enumerate(batches):
        with capture:
            capture.set_segments(segments, S)
            if i == 0:
                assert capture._slot_of is not None  # the block layout is in use
            row_losses(model, input_ids).sum().backward()
        if i == 1:  # brute force runs with the hooks detached
            expected = brute_force_shares(model, batches[:2], S, capture.measured_params)
            expected_gram = gram_of(expected)
            scale = expected_gram.abs().max()
            gram = capture.gram().double()
            torch.testing.assert_close(gram, expected_gram, rtol=0, atol=1e-5 * scale)
            _assert_matches_brute_force(capture, model, batches[:2])  # segment order now
    _assert_matches_brute_force(capture, model, batches)


def test_groups_per_segment_add_over_calls() -> None:
    capture = TaskGradCapture(nn.Sequential(nn.Linear(2, 2)), r"0")
    segments = torch.tensor([0, 0, 1, 2, -1])
    capture.set_segments(segments, 3, group_ids=torch.tensor([5, 5, 6, 7, 8]))
    capture.set_segments(segments, 3)  # every row its own group
    assert capture.groups_per_segment().tolist() == [1 + 2, 1 + 1, 1 + 1]


def test_hooks_detach() -> None:
    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    _capture_step(capture, model, [(batch(4), _segments(4))])
    before = {k: v.clone() for k, v in capture.segment_grads().items()}
    row_losses(model, batch(4)).sum().backward()  # detached: not captured
    for name, share in capture.segment_grads().items():
        torch.testing.assert_close(share, before[name])


def test_no_grad_forward_is_ignored() -> None:
    """A no-grad forward (e.g. generation) needs no segments, records nothing, warns nothing,
    and leaves no stale rows behind: the next captured step still matches brute force."""
    import warnings

    model = tiny_model("llama")
    capture = TaskGradCapture(model)
    batches = [(batch(4), _segments(4))]
    with capture, warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():  # e.g. generation: no segments set
            row_losses(model, batch(3))
        assert capture.segment_grads() == {}
        assert capture.captured_layers == []
        assert set(capture.missed_layers().values()) == {
            "it was not called with grad enabled in the training step"
        }
        for input_ids, segments in batches:
            capture.set_segments(segments, S)
            row_losses(model, input_ids).sum().backward()
    _assert_matches_brute_force(capture, model, batches)


def test_plain_torch_layers_with_padding_idx_and_2d_inputs() -> None:
    """nn.Embedding(padding_idx) on [N, T] ids, then bias-free Linear on 2-D [N, in] rows."""
    torch.manual_seed(0)
    embed, head = nn.Embedding(6, 4, padding_idx=0).double(), nn.Linear(4, 3, bias=False).double()
    ids = torch.tensor([[0, 1, 2], [3, 0, 5], [1, 1, 4], [2, 3, 0], [5, 4, 0]])
    segments = torch.tensor([1, -1, 0, 1, 0])

    def losses() -> torch.Tensor:
        return head(torch.tanh(embed(ids)).sum(1)).square().sum(1)  # [N]

    capture = TaskGradCapture(nn.ModuleDict({"embed": embed, "head": head}), r".")
    with capture:
        capture.set_segments(segments, 2)
        losses().sum().backward()
    per_row = losses()
    for name, p in (("embed.weight", embed.weight), ("head.weight", head.weight)):
        for s in range(2):
            (expected,) = torch.autograd.grad(per_row[segments == s].sum(), p, retain_graph=True)
            torch.testing.assert_close(capture.segment_grads()[name][s], expected)
    assert capture.segment_grads()["embed.weight"][:, 0].abs().sum() == 0


def test_bf16_autocast_on_fp32_model() -> None:
    model = tiny_model("llama", dtype=torch.float32)
    capture = TaskGradCapture(model, "all_linear")
    batches = [(batch(6), _segments(6))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _capture_step(capture, model, batches)
        _assert_matches_brute_force(capture, model, batches, rtol=1e-2)
