"""Held-out evaluation: greedy and sampled pass@1, seeded, and the demo's gain table."""

from __future__ import annotations

import pytest
import torch

from gradbal.demo import gain_table
from gradbal.evaluation import TaskEvaluation, evaluate_policy
from gradbal.models import TinyPolicy
from gradbal.tasks import Addition


def test_sampled_pass_at_1_is_a_fraction_per_prompt_and_seeded() -> None:
    policy = TinyPolicy(hidden_size=32, num_layers=1)
    task = Addition(n_train=5, n_val=6)
    [a] = evaluate_policy(policy, [task], max_new_tokens=3, temperature=1.0, num_samples=4, seed=1)
    [b] = evaluate_policy(policy, [task], max_new_tokens=3, temperature=1.0, num_samples=4, seed=1)
    assert a.correct.shape == (6,) and torch.equal(a.correct, b.correct)
    assert ((a.correct * 4) == (a.correct * 4).round()).all()  # multiples of 1/4


def test_bad_sampling_arguments() -> None:
    with pytest.raises(ValueError, match="temperature=0 with num_samples=1"):
        evaluate_policy(
            TinyPolicy(hidden_size=32, num_layers=1), [], temperature=0.0, num_samples=3
        )


def test_gain_table_pairs_prompts() -> None:
    """Task x: 0.5 -> 1.0 on 4 prompts (per-prompt diffs 1, 1, 0, 0: mean 0.5, sd 0.577,
    s.e. 0.289)."""
    before = [TaskEvaluation("x", torch.tensor([0.0, 0.0, 1.0, 1.0]))]
    after = [TaskEvaluation("x", torch.tensor([1.0, 1.0, 1.0, 1.0]))]
    table, gain, se = gain_table(before, after, before, after)
    assert gain == pytest.approx(0.5) and se == pytest.approx(0.5773502 / 2, rel=1e-5)
    assert "| x | 4 | 50.0% | 100.0% | +50.0% | 28.9% |" in table
