"""Shared inputs for the preference-objective tests: one pair with hand-checkable numbers.

Pair: policy log-probs chosen -1, rejected -3; reference -2 for both. So the log-ratios are
x_w = +1 and x_l = -1, the margin h = x_w - x_l = 2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbal.objectives import PreferenceLogps


def leaves(pc: float = -1.0, pr: float = -3.0) -> tuple[Tensor, Tensor]:
    """Policy log-probs as float64 leaves that require grad."""
    return (
        torch.tensor([pc], dtype=torch.float64, requires_grad=True),
        torch.tensor([pr], dtype=torch.float64, requires_grad=True),
    )


def refs(value: float = -2.0) -> tuple[Tensor, Tensor]:
    return torch.tensor([value], dtype=torch.float64), torch.tensor([value], dtype=torch.float64)


def logps(pc: Tensor, pr: Tensor, lengths: tuple[int, int] = (1, 1)) -> PreferenceLogps:
    rc, rr = refs()
    n_w = torch.full_like(pc, lengths[0], dtype=torch.long)
    n_l = torch.full_like(pr, lengths[1], dtype=torch.long)
    return PreferenceLogps(pc, pr, rc.expand_as(pc), rr.expand_as(pr), n_w, n_l)


def grads(loss: Tensor, pc: Tensor, pr: Tensor) -> tuple[float, float]:
    g_c, g_r = torch.autograd.grad(loss.sum(), [pc, pr], allow_unused=True)
    return (0.0 if g_c is None else float(g_c.sum())), (0.0 if g_r is None else float(g_r.sum()))
