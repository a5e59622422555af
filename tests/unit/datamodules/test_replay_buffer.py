"""ReservoirBuffer: the reservoir property, filtered sampling, and an exact state round-trip."""

from __future__ import annotations

import pytest
import torch

from gradbal.datamodules import ReservoirBuffer


def _stream(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i has features [i, -i] and label i, so the stored labels name the stored samples."""
    ids = torch.arange(n)
    return torch.stack([ids, -ids], dim=1).float(), ids


def test_first_capacity_samples_are_all_kept() -> None:
    buffer = ReservoirBuffer(capacity=5, seed=0)
    x, y = _stream(4)
    buffer.add(x, y, task_ids=0)
    assert len(buffer) == 4 and buffer.num_seen == 4
    kept = buffer.sample(10)
    assert sorted(kept.y.tolist()) == [0, 1, 2, 3]
    assert torch.equal(kept.x[:, 0].long(), kept.y)  # features stay with their label


def test_reservoir_keeps_each_sample_with_probability_capacity_over_n() -> None:
    """After N = 20 offers to M = 5 slots, each offer is stored with probability M / N = 0.25.

    Offered in batches of 3 (and a last one of 2): batching must not change the rule. Over
    1,000 seeds the frequency's standard error is sqrt(0.25 * 0.75 / 1000) = 0.0137; the
    tolerance is 4 of them.
    """
    runs, n, capacity = 1000, 20, 5
    counts = torch.zeros(n)
    x, y = _stream(n)
    for seed in range(runs):
        buffer = ReservoirBuffer(capacity, seed=seed)
        for start in range(0, n, 3):
            buffer.add(x[start : start + 3], y[start : start + 3], task_ids=0)
        assert len(buffer) == capacity and buffer.num_seen == n
        stored = buffer.sample(capacity).y
        assert len(set(stored.tolist())) == capacity  # distinct samples
        counts[stored] += 1
    frequency = counts / runs
    assert torch.allclose(frequency, torch.full((n,), capacity / n), atol=0.055), frequency
    # Early and late samples alike (no recency or primacy bias).
    assert abs(frequency[:10].mean() - frequency[10:].mean()) < 0.025


def test_capacity_one_keeps_a_uniform_sample() -> None:
    """M = 1, N = 3: Algorithm R keeps each of the three with probability exactly 1/3.

    1,500 seeds: standard error sqrt(2/9 / 1500) = 0.012, tolerance 4 of them.
    """
    hits = torch.zeros(3)
    x, y = _stream(3)
    for seed in range(1500):
        buffer = ReservoirBuffer(capacity=1, seed=seed)
        buffer.add(x, y, task_ids=0)
        hits[buffer.sample(1).y] += 1
    assert torch.allclose(hits / 1500, torch.full((3,), 1 / 3), atol=0.048)


def test_sample_filters_by_task_without_replacement() -> None:
    buffer = ReservoirBuffer(capacity=50, seed=0)
    x, y = _stream(30)
    buffer.add(x[:10], y[:10], task_ids=0)
    buffer.add(x[10:25], y[10:25], task_ids=torch.full((15,), 1))
    buffer.add(x[25:], y[25:], task_ids=2)
    old = buffer.sample(100, tasks=[0, 2])
    assert sorted(old.y.tolist()) == [*range(10), *range(25, 30)]
    assert set(old.task_ids.tolist()) == {0, 2}
    some = buffer.sample(4, tasks=[1])
    assert len(some.y) == 4 and len(set(some.y.tolist())) == 4
    assert all(10 <= label < 25 for label in some.y.tolist())
    assert len(buffer.sample(3, tasks=[7]).y) == 0
    assert len(buffer.sample(0).y) == 0


def test_empty_buffer_samples_nothing() -> None:
    sample = ReservoirBuffer(capacity=3).sample(5)
    assert len(sample.y) == 0 and len(sample.task_ids) == 0


def test_state_dict_round_trip_continues_identically() -> None:
    x, y = _stream(40)
    original = ReservoirBuffer(capacity=8, seed=3)
    original.add(x[:20], y[:20], task_ids=0)
    original.sample(5)  # advances the generator too
    restored = ReservoirBuffer(capacity=8, seed=99)  # the seed is overwritten by the state
    restored.load_state_dict(original.state_dict())
    for buffer in (original, restored):
        buffer.add(x[20:], y[20:], task_ids=1)
    assert original.num_seen == restored.num_seen == 40
    for a, b in zip(original.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    assert torch.equal(original.sample(6).y, restored.sample(6).y)


def test_state_dict_is_plain_cpu_values() -> None:
    buffer = ReservoirBuffer(capacity=4, seed=0)
    x, y = _stream(2)
    buffer.add(x, y, task_ids=0)
    state = buffer.state_dict()
    assert state["num_seen"] == 2 and state["capacity"] == 4
    assert state["x"].shape == (2, 2) and state["y"].tolist() == [0, 1]
    assert all(t.device.type == "cpu" for t in (state["x"], state["y"], state["task_ids"]))


def test_errors_say_what_and_how() -> None:
    with pytest.raises(ValueError, match=r"capacity must be >= 1\. Got 0"):
        ReservoirBuffer(capacity=0)
    buffer = ReservoirBuffer(capacity=4)
    buffer.add(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), task_ids=0)
    with pytest.raises(ValueError, match=r"shape \(5,\) but the buffer holds \(3,\)"):
        buffer.add(torch.zeros(1, 5), torch.zeros(1, dtype=torch.long), task_ids=0)
    with pytest.raises(ValueError, match=r"x must be \[B, \.\.\.\] and y \[B\]"):
        buffer.add(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), task_ids=0)
    with pytest.raises(ValueError, match="capacity 4, this run's has 6"):
        ReservoirBuffer(capacity=6).load_state_dict(buffer.state_dict())
