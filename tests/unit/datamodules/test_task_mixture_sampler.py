"""TaskMixtureSampler: each index follows the probabilities of the moment, the state resumes the
same stream, and ranks split one global stream."""

from __future__ import annotations

import pytest
import torch

from gradbal.datamodules import TaskMixtureSampler, WeightedTaskSampler

TASKS = [0, 1, 1, 2, 2, 2, 0, 1, 2, 2]  # each row's task


def test_a_restored_state_continues_the_same_stream() -> None:
    a = TaskMixtureSampler(TASKS, ["a", "b", "c"], sampling_probs=[0.2, 0.3, 0.5], seed=4)
    first = list(a)
    state = a.state_dict()
    rest = list(a)
    b = TaskMixtureSampler(TASKS, ["a", "b", "c"], seed=99)  # other seed and probs: restored
    b.load_state_dict(state)
    assert list(b) == rest and b.sampling_probs == a.sampling_probs
    assert first != rest  # the stream moves on (each task's pass continues)


def test_ranks_share_one_global_stream_and_keep_their_own_index() -> None:
    rows = [[i for i, t in enumerate(TASKS) if t == k] for k in range(3)]
    ranks = [
        TaskMixtureSampler(TASKS, ["a", "b", "c"], seed=1, rank=r, world_size=2, num_samples=6)
        for r in (0, 1)
    ]
    got = [list(s) for s in ranks]
    reference = WeightedTaskSampler([len(r) for r in rows], [1 / 3] * 3, seed=1)
    for step in range(6):  # one global draw of 2 per step: rank r keeps the r-th
        pairs = reference.draw(2)
        assert [got[r][step] for r in (0, 1)] == [rows[t][i] for t, i in pairs]


def test_every_row_of_a_task_comes_once_before_repeats() -> None:
    s = TaskMixtureSampler(TASKS, ["a", "b", "c"], sampling_probs={"c": 1.0}, num_samples=5)
    assert sorted(s) == [3, 4, 5, 8, 9]


def test_bad_input_says_what_and_how() -> None:
    with pytest.raises(ValueError, match="no rows"):
        TaskMixtureSampler([0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="index task_names"):
        TaskMixtureSampler([0, 3], ["a", "b"])
    with pytest.raises(ValueError, match="unknown tasks"):
        TaskMixtureSampler([0, 1], ["a", "b"], sampling_probs={"z": 1.0})
    with pytest.raises(ValueError, match="rank"):
        TaskMixtureSampler([0, 1], ["a", "b"], rank=2, world_size=2)
    s = TaskMixtureSampler([0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="same task list"):
        TaskMixtureSampler([0, 1], ["b", "a"]).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="non-negative"):
        s.set_sampling_probs(torch.tensor([-1.0, 2.0]))
