"""TaskGradCapture on the layouts sharding leaves behind: wrappers between a decoder layer and
its children (FSDP1, ``checkpoint_wrapper``, ``torch.compile``), flat 1-D shards and empty
ZeRO-3 placeholders (buffers sized from the layer's declared sizes), and quantized weights,
which stay refused."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from gradbal.gradstats import TaskGradCapture, select_modules


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Sequential(nn.Linear(4, 4))
        self.mlp = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(torch.tanh(self.self_attn(x)))


class OrigMod(nn.Module):
    """What ``torch.compile`` puts around a module: the original as ``_orig_mod``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner

    def forward(self, x: Tensor) -> Tensor:
        return self._orig_mod(x)


class Net(nn.Module):
    def __init__(self, wrap: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        blocks: list[nn.Module] = [Block(), Block()]
        if wrap == "checkpoint":
            blocks = [checkpoint_wrapper(b) for b in blocks]
        elif wrap == "compile":
            blocks = [OrigMod(b) for b in blocks]
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x


@pytest.mark.parametrize(
    ("wrap", "inner"),
    [("checkpoint", "_checkpoint_wrapped_module."), ("compile", "_orig_mod.")],
)
def test_last_attention_block_looks_through_wrappers(wrap: str, inner: str) -> None:
    model = Net(wrap)
    names = [n for n, _ in select_modules(model, "last_attention_block")]
    assert names == [f"layers.1.{inner}self_attn.0"]
    capture = TaskGradCapture(model, "last_attention_block")
    x = torch.randn(4, 4)
    with capture:
        capture.set_segments(torch.tensor([0, 1, 0, 1]), 2)
        model(x).square().sum().backward()
    share = capture.segment_grads()[f"layers.1.{inner}self_attn.0.weight"]
    attn = model.layers[1].get_submodule(inner.rstrip(".") + ".self_attn.0")
    torch.testing.assert_close(share.sum(0), attn.weight.grad)


class ShardedLinear(nn.Linear):
    """A Linear whose registered weight is a stand-in, as under FSDP1 (a flat 1-D shard) or
    DeepSpeed ZeRO-3 (``torch.empty(0)`` with ``ds_shape``); the forward uses the gathered
    full weight, kept aside, as those wrappers do during forward and backward."""

    def __init__(self, layout: str) -> None:
        super().__init__(4, 3)
        self.full = self.weight.detach().clone().requires_grad_(True)  # [3, 4]
        stand_in = torch.empty(0) if layout == "zero3" else torch.zeros(6)  # half the flat 12
        self.weight = nn.Parameter(stand_in)
        if layout == "zero3":
            self.weight.ds_shape = (3, 4)  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.full, self.bias)


@pytest.mark.parametrize("layout", ["zero3", "flat"])
def test_placeholder_weights_get_buffers_of_the_declared_shape(layout: str) -> None:
    layer = ShardedLinear(layout)
    capture = TaskGradCapture(layer, r"^$")
    assert capture.skipped == {}
    x, segments = torch.randn(6, 2, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with capture:
        capture.set_segments(segments, 3)
        out = layer(x).sin().sum((1, 2))  # [6]
        out.sum().backward()
    share = capture.segment_grads()["weight"]
    assert share.shape == (3, 3, 4)  # [S, out, in], not the stand-in's shape
    for s in range(3):
        x_s = x[segments == s]
        expected = torch.autograd.grad(layer(x_s).sin().sum(), layer.full)[0]
        torch.testing.assert_close(share[s], expected)
    assert capture.buffer_bytes(3) == 3 * (3 * 4 + 3) * 4


@pytest.mark.parametrize(
    ("weight", "fragment"),
    [
        (torch.zeros(3, 4, dtype=torch.int8), "dtype torch.int8"),
        (torch.zeros(6, 1, dtype=torch.uint8), "dtype torch.uint8"),  # bitsandbytes-style packing
        (torch.zeros(2, 4), "not the declared (3, 4)"),
    ],
)
def test_quantized_or_packed_weights_are_still_refused(weight: Tensor, fragment: str) -> None:
    layer = nn.Linear(4, 3)
    layer.weight = nn.Parameter(weight, requires_grad=False)
    with pytest.raises(ValueError, match="has no measurable layer") as info:
        TaskGradCapture(layer, r"^$", include_frozen=True)
    assert fragment in str(info.value)


def test_embedding_placeholder_is_sized_from_num_embeddings() -> None:
    emb = nn.Embedding(10, 3)
    full = emb.weight.detach().clone()
    emb.weight = nn.Parameter(torch.empty(0))
    emb.weight.ds_shape = (10, 3)  # type: ignore[attr-defined]
    capture = TaskGradCapture(emb, r"^$")
    assert capture.buffer_bytes(2) == 2 * 10 * 3 * 4
    ids = torch.tensor([[1, 2], [3, 3]])
    out = nn.functional.embedding(ids, full.requires_grad_(True))
    out.register_hook(lambda g: None)
    with capture:
        capture.set_segments(torch.tensor([0, 1]), 2)
        capture._on_forward(capture._layers[""], emb, (ids,), {}, out)  # the hook's path
        out.sum().backward()
    share = capture.segment_grads()["weight"]
    assert share.shape == (2, 10, 3)
    torch.testing.assert_close(share.sum(0), full.grad)
