"""WeightedTaskSampler properties under random task counts, probabilities and seeds (hypothesis).

Frequencies are checked per task against a binomial band: ``|count - n p| <= 6 sd + 3`` with
``sd = sqrt(n p (1 - p))``. Six standard deviations put a false alarm near 1e-9 per task in the
normal regime, and the ``+ 3`` covers the Poisson regime of tiny ``n p``, where ``6 sd`` is below
one draw (``P(count >= 4)`` is below 1e-9 for ``n p <= 0.01``; about 1e-8 at ``n p = 1``). With
a few hundred checks per run, a chance failure has probability around 1e-6, although hypothesis
picks new examples on every run. The sampler itself is seeded per example.
"""

from __future__ import annotations

import io
import math
from types import SimpleNamespace
from typing import cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch import Trainer
from torch import Tensor

from gradbal.callbacks import LearningGainMonitor, TaskGradNormMonitor
from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.datamodules import WeightedTaskSampler
from gradbal.weighting import (
    Fixed,
    GradProportional,
    InverseGradNorm,
    LearningGainProportional,
    TaskWeighting,
    Uniform,
)

DRAWS = 10_000
SIGMAS, SLACK = 6.0, 3.0

# A probability entry: zero, tiny (down to 1e-12), or order one; vectors need a positive sum.
prob_entry = st.one_of(
    st.just(0.0),
    st.floats(1e-12, 1e-6),
    st.floats(1e-3, 1.0),
)
seeds = st.integers(0, 2**31 - 1)


@st.composite
def prob_vectors(draw: st.DrawFn, min_k: int = 1, max_k: int = 8) -> list[float]:
    k = draw(st.integers(min_k, max_k))
    probs = draw(st.lists(prob_entry, min_size=k, max_size=k))
    if sum(probs) <= 0:  # the API refuses an all-zero vector; give one task all the mass
        probs[draw(st.integers(0, k - 1))] = 1.0
    return probs


def task_counts(sampler: WeightedTaskSampler, n: int) -> Tensor:
    tasks = torch.tensor([t for t, _ in sampler.draw(n)])
    return torch.bincount(tasks, minlength=len(sampler.task_sizes)).double()


def assert_frequencies(counts: Tensor, probs: Tensor) -> None:
    """Each task's count is within the binomial band around ``n p`` (see module docstring)."""
    n = float(counts.sum())
    sd = torch.sqrt(n * probs * (1 - probs))
    band = SIGMAS * sd + SLACK
    assert ((counts - n * probs).abs() <= band).all(), (counts.tolist(), (n * probs).tolist())


@settings(max_examples=20, deadline=None)
@given(probs=prob_vectors(), seed=seeds, size=st.integers(1, 40))
def test_empirical_frequencies_match_probabilities(
    probs: list[float], seed: int, size: int
) -> None:
    sampler = WeightedTaskSampler([size] * len(probs), probs, seed=seed)
    counts = task_counts(sampler, DRAWS)
    assert_frequencies(counts, sampler.probs)
    # A task with probability exactly zero is never drawn.
    zero = torch.tensor(probs) == 0
    assert (counts[zero] == 0).all()


@settings(max_examples=40, deadline=None)
@given(
    probs=prob_vectors(),
    seed=seeds,
    sizes=st.lists(st.integers(1, 30), min_size=8, max_size=8),
    chunks=st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
def test_same_seed_gives_the_same_stream(
    probs: list[float], seed: int, sizes: list[int], chunks: list[int]
) -> None:
    sizes = sizes[: len(probs)]
    a = WeightedTaskSampler(sizes, probs, seed=seed)
    b = WeightedTaskSampler(sizes, probs, seed=seed)
    for n in chunks:
        drawn = a.draw(n)
        assert drawn == b.draw(n)
        assert all(0 <= row < sizes[task] for task, row in drawn)


@settings(max_examples=40, deadline=None)
@given(
    probs=prob_vectors(min_k=2),
    new_probs=prob_vectors(min_k=8),
    seed=seeds,
    other_seed=seeds,
    sizes=st.lists(st.integers(1, 30), min_size=8, max_size=8),
    before=st.integers(1, 80),
    after=st.integers(1, 80),
)
def test_state_dict_mid_stream_continues_identically(
    probs: list[float],
    new_probs: list[float],
    seed: int,
    other_seed: int,
    sizes: list[int],
    before: int,
    after: int,
) -> None:
    """Draw, change the probabilities, draw, save (through ``torch.save``, as a checkpoint
    does), restore into a sampler built with another seed and other probabilities: the
    restored one continues the very stream the original goes on with."""
    k = len(probs)
    sizes, new_probs = sizes[:k], new_probs[:k]
    if sum(new_probs) <= 0:
        new_probs = probs
    original = WeightedTaskSampler(sizes, probs, seed=seed)
    original.draw(before)
    original.set_probs(new_probs)
    original.draw(1 + before // 2)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = WeightedTaskSampler(sizes, [1.0] * k, seed=other_seed)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    # Equal up to rounding: the restore re-normalises the saved floats.
    torch.testing.assert_close(restored.probs, original.probs, rtol=1e-15, atol=0)
    assert restored.draw(after) == original.draw(after)
    assert restored.draw(after) == original.draw(after)  # twice: across a new pass too


# ---- floors: TaskSamplingScheduler's p = floor + (1 - K * floor) * p_rule ------------------

rules = st.one_of(
    st.just(Uniform()),
    st.builds(GradProportional, power=st.floats(0.1, 4.0)),
    st.builds(InverseGradNorm, power=st.floats(0.1, 4.0)),
    st.builds(LearningGainProportional, power=st.floats(0.1, 4.0)),
)
# Statistics spanning many orders of magnitude (the schedule clamps them to >= 1e-2 * max).
stat_entry = st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-30, 30))


def _schedule_probs(
    rule: TaskWeighting, stats: list[float], floor: float, temperature: float
) -> Tensor:
    """What TaskSamplingScheduler hands the DataModule, from a RuleSchedule on a stub trainer
    (single process: ``broadcast`` is the identity)."""
    trainer = cast(
        Trainer,
        SimpleNamespace(
            callbacks=[TaskGradNormMonitor(), LearningGainMonitor()],
            global_step=1,
            strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
        ),
    )
    schedule = RuleSchedule("test", rule, every=1, ema=0.0, floor=floor, temperature=temperature)
    schedule.load_state_dict({"average": stats})
    schedule.setup(trainer, [f"t{i}" for i in range(len(stats))])
    probs = schedule.probabilities(trainer)
    assert probs is not None
    return probs


@settings(max_examples=20, deadline=None)
@given(
    data=st.data(),
    k=st.integers(1, 8),
    floor_fraction=st.floats(0.0, 0.99),
    temperature=st.floats(0.1, 10.0),
    seed=seeds,
)
def test_scheduler_floor_keeps_every_task_sampled(
    data: st.DataObject, k: int, floor_fraction: float, temperature: float, seed: int
) -> None:
    """Whatever the rule and statistics, every probability is ``>= floor`` and sums to 1, it is
    exactly ``floor + (1 - K floor) p_rule``, and each task is drawn at its rate: no task with a
    floor starves."""
    rule = data.draw(rules, label="rule")
    stats = data.draw(st.lists(stat_entry, min_size=k, max_size=k), label="stats")
    floor = floor_fraction / k
    probs = _schedule_probs(rule, stats, floor, temperature)
    assert torch.isfinite(probs).all()
    assert (probs >= floor * (1 - 1e-12)).all(), (probs.tolist(), floor)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-12)
    # the documented formula, from the rule alone
    clamped = torch.tensor(stats, dtype=torch.float64)
    clamped = clamped.clamp_min(1e-2 * clamped.max())
    p_rule = rule(clamped) ** (1 / temperature)
    expected = floor + (1 - k * floor) * p_rule / p_rule.sum()
    torch.testing.assert_close(probs, expected, rtol=1e-9, atol=1e-15)

    counts = task_counts(WeightedTaskSampler([5] * k, probs, seed=seed), DRAWS)
    assert_frequencies(counts, probs / probs.sum())
    n_floor = DRAWS * floor
    assert (counts >= n_floor - SIGMAS * math.sqrt(n_floor) - SLACK).all(), counts.tolist()


@settings(max_examples=10, deadline=None)
@given(probs=prob_vectors(min_k=2), floor_fraction=st.floats(0.5, 1.0))
def test_scheduler_floor_with_fixed_rule(probs: list[float], floor_fraction: float) -> None:
    """``Fixed`` may give a task probability 0; the floor still gives it ``floor``."""
    k = len(probs)
    floor = floor_fraction / k
    out = _schedule_probs(Fixed(probs), [1.0] * k, floor, 1.0)
    assert (out >= floor * (1 - 1e-12)).all() and math.isclose(float(out.sum()), 1.0)


@pytest.mark.filterwarnings("ignore:.*non-finite probabilities:RuntimeWarning")
def test_small_temperature_gives_finite_probabilities() -> None:
    probs = _schedule_probs(Uniform(), [1.0] * 8, floor=0.01, temperature=1e-3)
    assert torch.isfinite(probs).all()
