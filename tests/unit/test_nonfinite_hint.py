"""Non-finite values name their likely cause: the learning rate in use and the reward scale."""

from __future__ import annotations

import types

import pytest
import torch
from lightning.pytorch import LightningModule

from gradbal.models import TinyPolicy
from gradbal.modules._generation import generate
from gradbal.nonfinite_loss import NonFiniteLossError, guard_loss


def _module_with_lr(lr: float, scale_rewards: str = "group") -> LightningModule:
    module = LightningModule()
    param = torch.nn.Parameter(torch.zeros(1))
    module._trainer = types.SimpleNamespace(  # type: ignore[assignment]
        optimizers=[torch.optim.AdamW([param], lr=lr)], world_size=1, global_step=7
    )
    module.scale_rewards = scale_rewards  # type: ignore[assignment]
    return module


def test_a_nonfinite_loss_names_the_learning_rate_and_reward_scale() -> None:
    with pytest.raises(NonFiniteLossError) as info:
        guard_loss(_module_with_lr(3e4, "none"), torch.tensor(float("inf")), "stop")
    message = str(info.value)
    assert "at optimiser step 7" in message
    assert "Learning rate too high? (lr=30000)" in message
    assert "scale_rewards='none'" in message
    with pytest.warns(RuntimeWarning, match=r"skipped .*\(lr=0\.5\)"):
        guard_loss(_module_with_lr(0.5), torch.tensor(float("nan")), "skip")


@pytest.mark.parametrize("do_sample", [True, False])
def test_nan_weights_fail_generation_with_the_cause_not_a_multinomial_error(
    do_sample: bool,
) -> None:
    model, tokenizer = TinyPolicy(hidden_size=32, num_layers=1).build()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(NonFiniteLossError, match="logits are NaN or infinite while sampling"):
        generate(model, tokenizer, ids, torch.ones_like(ids), max_new_tokens=2, do_sample=do_sample)
