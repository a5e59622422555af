"""Preference objectives declare the diagnostics they return, so modules size per-task metrics
before the first batch without running the objective on made-up inputs."""

from __future__ import annotations

import pytest
import torch

from gradbal.models import TinyPolicy
from gradbal.modules._preference_metrics import check_diagnostics
from gradbal.objectives import (
    BPO,
    DPO,
    IPO,
    BalancedDPO,
    Hinge,
    PreferenceLogps,
    PreferenceLoss,
    PreferenceObjective,
    RobustDPO,
    WithChosenNLL,
)

OBJECTIVES = [
    DPO(),
    RobustDPO(),
    IPO(),
    Hinge(),
    BPO(),
    BalancedDPO(),
    BalancedDPO(reweight="rejected"),
    WithChosenNLL(BalancedDPO()),
    WithChosenNLL(DPO()),
]


def _logps() -> PreferenceLogps:
    g = torch.Generator().manual_seed(0)
    x = -torch.rand(4, 4, generator=g) * 5
    return PreferenceLogps(x[0], x[1], x[2], x[3], torch.full((4,), 3.0), torch.full((4,), 5.0))


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_declared_names_are_the_returned_keys(objective: PreferenceObjective) -> None:
    out = objective(_logps())
    assert list(objective.diagnostic_names) == list(out.diagnostics)
    check_diagnostics(objective, out)


class _Undeclared(PreferenceObjective):
    def __call__(self, logps: PreferenceLogps) -> PreferenceLoss:
        out = DPO()(logps)
        return out._replace(diagnostics={"my/value": out.losses.detach()})


def test_an_undeclared_diagnostic_says_how_to_declare_it() -> None:
    objective = _Undeclared()
    with pytest.raises(ValueError, match="diagnostic_names"):
        check_diagnostics(objective, objective(_logps()))


def test_dpo_module_sizes_validation_metrics_from_the_declaration() -> None:
    from gradbal.modules import DPOModule
    from gradbal.modules._preference_metrics import PAIR_GROUPS

    module = DPOModule(TinyPolicy(hidden_size=32, num_layers=1), WithChosenNLL(BalancedDPO()))
    names = module.objective.diagnostic_names
    assert names == ("balance_weight/chosen", "balance_weight/rejected", "nll/chosen")
    assert len(PAIR_GROUPS) == 6
