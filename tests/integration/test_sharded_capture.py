"""Per-task gradient capture under FSDP2 (``fully_shard``) and FSDP1 (``use_orig_params=True``,
``device_id=cpu``) on 2 gloo ranks, against brute force on an unsharded copy.

One subprocess (timeout 240 s) spawns the 2 ranks and runs every case of
``_sharded_child.CASES``: each rank captures the shares of its own 8 rows of a tiny Llama and
computes, on an unsharded copy of the same weights, each segment's gradient with
``torch.autograd.grad``; the statistic is all-reduced over the ranks both ways. ZeRO-3-style
``torch.empty(0)`` placeholders are covered by ``tests/unit/gradstats/test_capture_sharded.py``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration._process_group_run import run_group
from tests.integration._sharded_child import CASES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("sharded_capture")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = run_group(
        [sys.executable, "-m", "tests.integration._sharded_child", str(out), str(_free_port())],
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {
        case: [torch.load(out / f"{case}_rank{r}.pt", weights_only=False) for r in (0, 1)]
        for case in CASES
    }


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("case", list(CASES))
def test_segment_gradients_equal_brute_force(case: str, results: dict[str, Any]) -> None:
    """Full-shape shares of every measured parameter, on each rank, equal the per-segment
    gradients of the unsharded copy (bf16: of a bf16 copy, within bf16 rounding)."""
    tolerance = 2e-2 if CASES[case][3] is torch.bfloat16 else 1e-5
    for rank in results[case]:
        assert rank["skipped"] == {}
        assert rank["shares"].keys() == rank["shares_ref"].keys()
        for name, share in rank["shares"].items():
            assert share.shape == rank["shares_ref"][name].shape, name
            assert _rel(share, rank["shares_ref"][name]) < tolerance, name


@pytest.mark.parametrize("case", list(CASES))
def test_reduced_statistic_is_identical_on_ranks_and_equals_brute_force(
    case: str, results: dict[str, Any]
) -> None:
    rank0, rank1 = results[case]
    assert torch.equal(rank0["unbiased_sq"], rank1["unbiased_sq"])
    assert bool(rank0["valid"].all())
    tolerance = 2e-2 if CASES[case][3] is torch.bfloat16 else 1e-5
    assert _rel(rank0["unbiased_sq"].double(), rank0["unbiased_sq_ref"]) < tolerance


def test_fsdp1_layers_are_found_through_the_wrapper(results: dict[str, Any]) -> None:
    captured = results["fsdp1"][0]["captured"]
    assert len(captured) == 4
    assert all("_fsdp_wrapped_module.self_attn." in name for name in captured)
    assert len(results["fsdp1_all_linear"][0]["captured"]) == 15  # 2 x 7 + lm_head


@pytest.mark.parametrize("case", ["fsdp2", "fsdp2_accumulation", "fsdp2_offload_embedding"])
def test_shares_add_up_to_fsdp_reduced_gradient(case: str, results: dict[str, Any]) -> None:
    """Sum over segments and ranks, divided by the 2 ranks, is FSDP2's averaged gradient."""
    rank0, rank1 = results[case]
    for name, grad in rank0["reduced"].items():
        total = (rank0["shares"][name].sum(0) + rank1["shares"][name].sum(0)) / 2
        assert _rel(total, grad.double()) < 1e-5, name


def test_embedding_is_measured_under_cpu_offload(results: dict[str, Any]) -> None:
    captured = results["fsdp2_offload_embedding"][0]["captured"]
    assert captured == [
        "model.embed_tokens",
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
