"""Tests for gradbal.objectives.chosen_nll.

Hand example: DPO at h = 2, beta = 0.5 gives 0.313262; the chosen completion has log-prob -1
over 2 tokens, so its per-token NLL is 0.5 and weight 2 adds 1.0: 1.313262. The NLL term adds
-weight / length = -1 to d/d pc.
"""

import math

import pytest

from gradbal.objectives import DPO, WithChosenNLL, chosen_nll
from tests.unit.objectives._preference_cases import grads, leaves, logps


def test_adds_weighted_per_token_nll_to_loss_and_gradient() -> None:
    pc, pr = leaves()
    base = DPO(beta=0.5)(logps(pc, pr, lengths=(2, 2)))
    out = WithChosenNLL(DPO(beta=0.5), weight=2.0)(logps(pc, pr, lengths=(2, 2)))
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 1.0)
    assert out.diagnostics["nll/chosen"].item() == pytest.approx(0.5)
    g_base, g = grads(base.losses, pc, pr), grads(out.losses, pc, pr)
    assert g[0] == pytest.approx(g_base[0] - 1.0) and g[1] == pytest.approx(g_base[1])
    assert chosen_nll(pc.detach(), logps(pc, pr, (2, 2)).chosen_lengths).item() == 0.5


def test_negative_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        WithChosenNLL(DPO(), weight=-1.0)
