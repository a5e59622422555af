"""GSA forwards each current-task sample twice (cross-task row and within-task row): one group.

A gradient monitor splits a task's groups into halves and treats groups as independent; two rows
of one sample reported as two groups could land in both halves, biasing ``unbiased_sq`` up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradbal.continual import GSA, ContinualStep, OnlineContinualModule
from gradbal.datamodules import ReservoirBuffer
from gradbal.types import TaskLosses

CLASSES = [[0, 1], [2, 3]]


def _step(buffer: ReservoirBuffer, net: Callable[[Tensor], Tensor]) -> ContinualStep:
    x = torch.randn(4, 3)
    return ContinualStep(
        x=x,
        y=torch.tensor([2, 3, 2, 3]),
        task=1,
        task_classes=torch.tensor(CLASSES[1]),
        batch_in_task=0,
        buffer=buffer,
        logits=net,
    )


def _filled_buffer() -> ReservoirBuffer:
    buffer = ReservoirBuffer(capacity=40, seed=0)
    buffer.add(torch.randn(10, 3), torch.tensor([0, 1] * 5), 0)  # earlier task
    buffer.add(torch.randn(6, 3), torch.tensor([2, 3] * 3), 1)  # current task
    return buffer


def _same_sample(x: Tensor) -> Tensor:
    """``[R, R]`` bool: rows holding the same input vector."""
    return (x.unsqueeze(0) == x.unsqueeze(1)).all(-1)


def test_gsa_reports_each_current_task_sample_as_one_group() -> None:
    torch.manual_seed(0)
    inputs: list[Tensor] = []

    def net(x: Tensor) -> Tensor:
        inputs.append(x)
        return x @ torch.ones(3, 4)

    objective = GSA(cross_task_batch_size=8, current_task_replay=2)
    objective._observed = {0, 1}  # task 0's classes were seen: half the cross rows are replay
    out = objective(_step(_filled_buffer(), net))
    rows = inputs[0]  # one forward over [cross rows; within rows]
    assert len(rows) == 8 + 6 and bool((out.task_ids[:8] == 0).any())
    assert out.group_ids is not None and out.group_ids.shape == out.losses.shape
    duplicated = _same_sample(rows)
    assert duplicated.sum() > len(rows)  # some sample really is forwarded twice
    # Same group exactly when same sample.
    assert torch.equal(out.group_ids.unsqueeze(0) == out.group_ids.unsqueeze(1), duplicated)


def test_online_continual_module_passes_gsa_groups_to_task_losses() -> None:
    module = OnlineContinualModule(GSA(cross_task_batch_size=8, current_task_replay=2))
    module.network = nn.Linear(3, 4)
    module.num_classes = 4
    module.task_names = ["a", "b"]
    module.task_classes = [torch.tensor(c) for c in CLASSES]
    module.buffer = _filled_buffer()
    module._task = 1
    batch = {
        "x": torch.randn(4, 3),
        "y": torch.tensor([2, 3, 2, 3]),
        "task_id": torch.ones(4).long(),
    }
    module.training_step(batch, 0)
    reported = module.task_losses
    assert isinstance(reported, TaskLosses)
    groups = reported.group_ids
    assert len(groups.unique()) < len(groups)  # duplicated rows share their group
