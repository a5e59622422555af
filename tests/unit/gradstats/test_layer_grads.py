"""A dense layer's per-segment gradient shares: by runs of rows (slices, no gather) and by
gathered rows give the same shares, and both match each segment's summed gradient."""

from __future__ import annotations

import pytest
import torch

from gradbal.gradstats._layer_grads import accumulate_dense, make_plan


def _shares(
    plan_runs: bool, segments: torch.Tensor, x: torch.Tensor, dy: torch.Tensor, s: int, in_out: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    plan = make_plan(segments, s)
    if not plan_runs:
        plan = plan._replace(runs=None)
    shape = (s, x.shape[-1], dy.shape[-1]) if in_out else (s, dy.shape[-1], x.shape[-1])
    weight, bias = torch.zeros(shape), torch.zeros(s, dy.shape[-1])
    accumulate_dense(weight, bias, x, dy, plan, weight_is_in_out=in_out)
    return weight, bias


@pytest.mark.parametrize("in_out", [False, True])
@pytest.mark.parametrize(
    "segments",
    [
        [0, 0, 0, 1, 1, 1, 3, 3, 3, 2, 2, 2],  # whole groups, out of order
        [1, 1, -1, -1, 0, 0, 1, 1, -1, 0, 0, 0],  # left-out rows between runs
        [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1],  # interleaved: more runs than 2 * S, gathered
    ],
)
def test_runs_and_gathered_rows_give_each_segments_gradient(
    segments: list[int], in_out: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    seg = torch.tensor(segments)
    x = torch.randn(12, 5, 7, generator=gen)  # [N, T, in]
    dy = torch.randn(12, 5, 3, generator=gen)  # [N, T, out]
    s = 4
    plan = make_plan(seg, s)
    assert (plan.runs is None) == (segments[:2] == [0, 1])
    by_runs, by_rows = _shares(True, seg, x, dy, s, in_out), _shares(False, seg, x, dy, s, in_out)
    for k in range(s):
        rows = seg == k
        want = torch.einsum("nto,nti->oi", dy[rows], x[rows])
        want = want.T if in_out else want
        torch.testing.assert_close(by_runs[0][k], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(by_rows[0][k], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(by_runs[1][k], dy[rows].sum((0, 1)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(by_rows[1][k], dy[rows].sum((0, 1)), atol=1e-5, rtol=1e-5)


def test_runs_list_each_run_of_kept_rows() -> None:
    plan = make_plan(torch.tensor([2, 2, -1, 0, 0, 0, 2]), 3)
    assert plan.runs == [(0, 2, 2), (3, 6, 0), (6, 7, 2)]
