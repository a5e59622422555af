"""Chosen/rejected gradient parts from one captured backward equal brute-force autograd.grad.

A DPO batch of 6 pairs from 2 tasks: rows 0-5 are chosen completions, rows 6-11 the rejected
ones (same prompts). g_chosen,k is the gradient of task k's share of the loss with the rejected
log-probs detached, g_rejected,k the same with the chosen ones detached.
"""

from __future__ import annotations

import pytest
import torch
from _gradstats_helpers import batch, tiny_model

from gradbal.gradstats import (
    TaskGradCapture,
    preference_grad_parts,
    preference_segments,
)
from gradbal.objectives import dpo_loss

PAIRS, TASKS = 6, 2
TASK_IDS = torch.tensor([0, 1, 0, 0, 1, 1])


def _sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the last 3 tokens (the "completion") of each row."""
    logits = model(input_ids=input_ids).logits[:, -4:-1]  # [N, 3, V]
    picked = logits.log_softmax(-1).gather(-1, input_ids[:, -3:, None]).squeeze(-1)  # [N, 3]
    return picked.sum(1)  # [N]


def _rows() -> torch.Tensor:
    ids = batch(2 * PAIRS, length=8, seed=4)
    ids[PAIRS:, :5] = ids[:PAIRS, :5]  # the rejected rows share the chosen rows' prompts
    return ids


def _losses(model: torch.nn.Module, ids: torch.Tensor, detach: str | None) -> torch.Tensor:
    logps = _sequence_logps(model, ids)  # [2B]
    chosen, rejected = logps[:PAIRS], logps[PAIRS:]
    if detach == "rejected":
        rejected = rejected.detach()
    elif detach == "chosen":
        chosen = chosen.detach()
    ref = torch.full((PAIRS,), -12.0, dtype=logps.dtype)
    return dpo_loss(chosen, rejected, ref, ref - 1, beta=0.5).losses / PAIRS  # [B]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_parts_match_brute_force(family: str) -> None:
    model = tiny_model(family)
    ids = _rows()
    capture = TaskGradCapture(model, "all_linear")
    params = dict(model.named_parameters())
    measured = [params[n] for n in capture.measured_params]
    rejected_rows = torch.arange(2 * PAIRS) >= PAIRS
    with capture:
        capture.set_segments(
            preference_segments(TASK_IDS.repeat(2), rejected_rows, TASKS), 2 * TASKS
        )
        _losses(model, ids, detach=None).sum().backward()
    parts = preference_grad_parts(capture.gram())

    flat: dict[tuple[str, int], torch.Tensor] = {}
    for part, other in (("chosen", "rejected"), ("rejected", "chosen")):
        for k in range(TASKS):
            loss = _losses(model, ids, detach=other)[TASK_IDS == k].sum()
            grads = torch.autograd.grad(loss, measured)
            flat[part, k] = torch.cat([g.flatten() for g in grads]).double()
    for k in range(TASKS):
        c, r = flat["chosen", k], flat["rejected", k]
        assert parts.chosen[k].item() == pytest.approx(c.norm().item(), rel=1e-9)
        assert parts.rejected[k].item() == pytest.approx(r.norm().item(), rel=1e-9)
        assert parts.ratio[k].item() == pytest.approx((r.norm() / c.norm()).item(), rel=1e-9)
        assert parts.cosine[k].item() == pytest.approx(
            (c @ r / (c.norm() * r.norm())).item(), rel=1e-9
        )
    total_c, total_r = (
        flat["chosen", 0] + flat["chosen", 1],
        flat["rejected", 0] + flat["rejected", 1],
    )
    assert parts.total_ratio.item() == pytest.approx((total_r.norm() / total_c.norm()).item())
    # and the two parts add up to the gradient actually applied
    applied = torch.cat([p.grad.flatten() for p in measured]).double()  # type: ignore[union-attr]
    torch.testing.assert_close(applied, total_c + total_r)


def test_absent_task_is_nan_and_bad_gram_is_rejected() -> None:
    g = torch.eye(4)
    parts = preference_grad_parts(g, present=torch.tensor([True, False]))
    assert parts.chosen[0] == 1 and parts.chosen[1].isnan() and parts.ratio[1].isnan()
    with pytest.raises(ValueError, match=r"\[2K, 2K\]"):
        preference_grad_parts(torch.eye(3))
    with pytest.raises(ValueError, match="one entry per forward row"):
        preference_segments(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.bool), 1)
