"""TaskGradCapture names why a layer's inputs are not the batch rows, and never reports a fake 0."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from gradbal.gradstats import TaskGradCapture, task_grad_stats

N = 4
SEGMENTS = torch.tensor([0, 1, 0, 1])


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 5)
        self.head = nn.Linear(5, 2)
        self.unused = nn.Linear(5, 2)


def _step(
    capture: TaskGradCapture, forward: Callable[[Model, Tensor], Tensor], model: Model
) -> None:
    with capture:
        capture.set_segments(SEGMENTS, 2)
        forward(model, torch.randn(N, 3)).sum().backward()


CAUSES: dict[str, tuple[Callable[[Model, Tensor], Tensor], str]] = {
    "row by row, unbatched": (
        lambda m, x: torch.stack([m.head(h) for h in m.trunk(x)]),
        r"called 4 times in the step with 1 row\(s\) each, but the batch has 4 rows: the layer "
        r"is applied to each row separately \(e\.g\. `head\(h\[i\]\)`\)",
    ),
    "row by row, h[i:i+1]": (
        lambda m, x: torch.cat([m.head(m.trunk(x)[i : i + 1]) for i in range(N)]),
        r"applied to each row separately",
    ),
    "per-task head on a mask": (
        lambda m, x: torch.cat([m.head(m.trunk(x)[SEGMENTS == k]) for k in (0, 1)]),
        r"called 2 times in the step on \[2, 2\] rows .*applied to parts of the batch separately "
        r"\(e\.g\. a per-task head on `h\[task_ids == k\]`\)",
    ),
    "one unbatched row": (
        lambda m, x: m.head(m.trunk(x)[0]),
        r"inputs of shape \(5,\) .*without a batch dimension.*applied to a single row",
    ),
    "tokens flattened": (
        lambda m, x: m.head(m.trunk(x).repeat(2, 1)),
        r"leading dimension 8\).*2 rows per batch row \(e\.g\. tokens flattened to \[N\*T, D\]",
    ),
    "a subset": (
        lambda m, x: m.head(m.trunk(x)[:3]),
        r"leading dimension 3\).*only some of the batch rows",
    ),
}


@pytest.mark.parametrize("case", CAUSES)
def test_the_drop_warning_names_the_cause_and_the_fix(case: str) -> None:
    forward, match = CAUSES[case]
    model = Model()
    capture = TaskGradCapture(model, r"^head$")
    with pytest.warns(
        UserWarning, match=f"no longer measures `head`: .*{match}.*params='last_attention_block'"
    ):
        _step(capture, forward, model)
    assert capture.measured_layers == [] and "head" in capture.skipped


def test_nothing_captured_is_nan_not_zero() -> None:
    model = Model()
    capture = TaskGradCapture(model, r"^head$")
    with pytest.warns(UserWarning, match="each row separately"):
        _step(capture, CAUSES["row by row, unbatched"][0], model)
    assert capture.captured_layers == []
    gram = capture.gram()
    assert torch.isnan(gram).all()  # was all 0: a "measured" zero gradient
    stats = task_grad_stats(gram, capture.groups_per_segment(), segment_tasks=torch.tensor([0, 0]))
    assert math.isnan(float(stats.unbiased_sq[0]))


def test_layers_not_reached_are_named_and_the_rest_still_measured() -> None:
    model = Model()
    capture = TaskGradCapture(model, "all_linear")
    with capture:
        capture.set_segments(SEGMENTS, 2)
        h = model.trunk(torch.randn(N, 3))
        model.unused(h)  # called, never in the loss
        model.head(h).sum().backward()
    assert capture.captured_layers == ["trunk", "head"]
    assert capture.missed_layers() == {
        "unused": "the backward did not reach its output (the output is not in the loss)"
    }
    assert torch.isfinite(capture.gram()).all()
    capture.reset()
    with capture:
        capture.set_segments(SEGMENTS, 2)
        model.head(torch.randn(N, 5)).sum().backward()
    assert capture.missed_layers() == {
        "trunk": "it was not called with grad enabled in the training step",
        "unused": "it was not called with grad enabled in the training step",
    }
