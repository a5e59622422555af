"""A dense layer's per-segment gradient shares: by equal blocks of rows (one batched GEMM), by runs
of rows (slices, no gather) and by gathered rows give the same shares, and each matches its
segment's summed gradient."""

from __future__ import annotations

import pytest
import torch

from gradbal.gradstats._layer_grads import SegmentPlan, accumulate_dense, make_plan

STRATEGIES = ("blocks", "runs", "gathered")


def _plan(strategy: str, segments: torch.Tensor, s: int) -> SegmentPlan | None:
    """The plan restricted to one strategy, or ``None`` if the segments do not allow it."""
    plan = make_plan(segments, s)
    if strategy == "blocks":
        return plan if plan.blocks is not None else None
    if strategy == "runs":
        return plan._replace(blocks=None) if plan.runs is not None else None
    return plan._replace(blocks=None, runs=None)


def _shares(
    plan: SegmentPlan, x: torch.Tensor, dy: torch.Tensor, s: int, in_out: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (s, x.shape[-1], dy.shape[-1]) if in_out else (s, dy.shape[-1], x.shape[-1])
    weight, bias = torch.zeros(shape), torch.zeros(s, dy.shape[-1])
    accumulate_dense(weight, bias, x, dy, plan, weight_is_in_out=in_out)
    return weight, bias


CASES = {  # segments of 12 rows, S = 4 -> the strategies that apply
    "whole groups, out of order": ([0, 0, 0, 1, 1, 1, 3, 3, 3, 2, 2, 2], STRATEGIES),
    "block s is segment s": ([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], STRATEGIES),
    "unequal runs, blocks of 2": ([1, 1, 1, 1, 0, 0, 3, 3, 3, 3, 2, 2], STRATEGIES),
    "left-out rows between runs": ([1, 1, -1, -1, 0, 0, 1, 1, -1, 0, 0, 0], ("runs", "gathered")),
    "left-out blocks": ([1, 1, -1, -1, 0, 0, 3, 3, -1, -1, 2, 2], STRATEGIES),
    "runs of 5 and 7: too many blocks": ([0] * 5 + [1] * 7, ("runs", "gathered")),
    "interleaved: more runs than 2 * S": ([0, 1] * 6, ("gathered",)),
}


@pytest.mark.parametrize("in_out", [False, True], ids=["linear", "conv1d"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_strategy_gives_each_segments_gradient(case: str, in_out: bool) -> None:
    segments, strategies = CASES[case]
    gen = torch.Generator().manual_seed(0)
    seg = torch.tensor(segments)
    x = torch.randn(12, 5, 7, generator=gen)  # [N, T, in]
    dy = torch.randn(12, 5, 3, generator=gen)  # [N, T, out]
    s = 4
    plans = {name: _plan(name, seg, s) for name in STRATEGIES}
    assert [name for name, plan in plans.items() if plan is not None] == list(strategies)
    for name in strategies:
        plan = plans[name]
        assert plan is not None
        weight, bias = _shares(plan, x, dy, s, in_out)
        for k in range(s):
            rows = seg == k
            want = torch.einsum("nto,nti->oi", dy[rows], x[rows])
            want = want.T if in_out else want
            torch.testing.assert_close(weight[k], want, atol=1e-5, rtol=1e-5, msg=name)
            torch.testing.assert_close(bias[k], dy[rows].sum((0, 1)), atol=1e-5, rtol=1e-5)


def test_blocks_are_the_largest_that_fit_every_run() -> None:
    plan = make_plan(torch.tensor([1, 1, 1, 1, 0, 0, 3, 3, 3, 3, 2, 2]), 4)
    assert plan.blocks is not None
    assert (plan.blocks.rows, plan.blocks.num_blocks, plan.blocks.kept) == (2, 6, None)
    assert plan.blocks.segments.tolist() == [1, 1, 0, 3, 3, 2]
    assert not plan.blocks.identity
    identity = make_plan(torch.tensor([0, 0, 1, 1, 2, 2]), 3).blocks
    assert identity is not None and identity.identity
    left_out = make_plan(torch.tensor([1, 1, -1, -1, 0, 0]), 2).blocks
    assert left_out is not None and left_out.kept is not None
    assert (left_out.kept.tolist(), left_out.segments.tolist()) == ([0, 2], [1, 0])


def test_blocks_inside_autocast_give_fp32_shares() -> None:
    """The backward of a bf16-autocast forward calls the hook inside the autocast region."""
    seg = torch.tensor([1, 1, 0, 0])
    x, dy = torch.randn(4, 3, 5), torch.randn(4, 3, 2)
    plan = make_plan(seg, 2)
    weight, bias = torch.zeros(2, 2, 5), torch.zeros(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        accumulate_dense(weight, bias, x, dy, plan, weight_is_in_out=False)
    want = torch.einsum("nto,nti->oi", dy[:2], x[:2])
    torch.testing.assert_close(weight[1], want, atol=1e-5, rtol=1e-5)


def test_runs_list_each_run_of_kept_rows() -> None:
    plan = make_plan(torch.tensor([2, 2, -1, 0, 0, 0, 2]), 3)
    assert plan.runs == [(0, 2, 2), (3, 6, 0), (6, 7, 2)]
