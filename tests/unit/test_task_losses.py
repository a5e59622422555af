"""report_task_losses / set_task_loss_weights: the contract a module meets in one call."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from gradbal import report_task_losses, set_task_loss_weights, task_loss_weights
from gradbal.types import TaskLosses


def test_unweighted_sets_task_losses_and_returns_the_sum() -> None:
    module = nn.Linear(2, 1)
    losses = module(torch.randn(4, 2)).squeeze(1)  # [4], in the graph
    task_ids = torch.tensor([0, 1, 1, 2])
    loss = report_task_losses(module, losses, task_ids)
    reported = module.task_losses
    assert isinstance(reported, TaskLosses)
    assert reported.losses is losses and reported.task_ids is task_ids
    assert reported.group_ids.tolist() == [0, 1, 2, 3]  # every sample its own group
    assert_close(loss, losses.sum())


def test_weights_apply_per_task_and_gradients_follow() -> None:
    module = nn.Linear(2, 1, bias=False)
    x, task_ids, group_ids = torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1])
    set_task_loss_weights(module, torch.tensor([3.0, 0.5]))
    loss = report_task_losses(module, module(x).squeeze(1), task_ids, group_ids)
    loss.backward()
    expected = 3.0 * x[0] + 0.5 * (x[1] + x[2])
    assert module.weight.grad is not None
    assert_close(module.weight.grad[0], expected)
    assert_close(module.task_losses.losses.sum(), loss)  # the shares are the weighted ones
    assert module.task_losses.group_ids is group_ids


def test_weights_can_be_cleared_and_are_validated() -> None:
    module = nn.Linear(1, 1)
    assert task_loss_weights(module) is None
    set_task_loss_weights(module, [1.0, 2.0])
    assert task_loss_weights(module).tolist() == [1.0, 2.0]  # type: ignore[union-attr]
    set_task_loss_weights(module, None)
    assert task_loss_weights(module) is None
    for bad in ([1.0, -1.0], [float("nan")], [[1.0]]):
        with pytest.raises(ValueError, match="finite non-negative"):
            set_task_loss_weights(module, bad)  # type: ignore[arg-type]


def test_reduced_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="reduction='none'"):
        report_task_losses(nn.Linear(1, 1), torch.tensor(1.0), torch.tensor([0]))
    with pytest.raises(ValueError, match="one entry per sample"):
        report_task_losses(nn.Linear(1, 1), torch.ones(3), torch.tensor([0, 1]))
