"""GSA statistics, weights and loss against hand-worked numbers and the official code's loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import (
    GSAStats,
    gsa_class_stats,
    gsa_class_weights,
    gsa_loss,
    gsa_ratio,
)

# Three samples, three classes, labels [0, 1, 1]:
#   p = [[0.5, 0.3, 0.2],
#        [0.1, 0.6, 0.3],
#        [0.2, 0.2, 0.6]]
PROBS = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1])


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_stats_hand_worked() -> None:
    """Pos_c = sum over class-c samples of 1 - p_c; Neg_c = sum over the others of p_c.

    Pos = [1 - 0.5, (1 - 0.6) + (1 - 0.2), 0] = [0.5, 1.2, 0]
    Neg = [0.1 + 0.2, 0.3, 0.2 + 0.3 + 0.6] = [0.3, 0.3, 1.1]
    """
    stats = gsa_class_stats(PROBS.log(), LABELS)
    assert_close(stats.positive, torch.tensor([0.5, 1.2, 0.0]))
    assert_close(stats.negative, torch.tensor([0.3, 0.3, 1.1]))
    assert not stats.positive.requires_grad


def test_ratio_and_weights_hand_worked() -> None:
    """ANT = Pos / Neg = [5/3, 4, 0]; w = 2 sigmoid(ANT - 1) = [2s(2/3), 2s(3), 2s(-1)].

    2 sigmoid(2/3) = 1.32150, 2 sigmoid(3) = 1.90515, 2 sigmoid(-1) = 0.53788.
    """
    stats = gsa_class_stats(PROBS.log(), LABELS)
    assert_close(gsa_ratio(stats), torch.tensor([5 / 3, 4.0, 0.0]))
    weights = gsa_class_weights(stats, batch_in_task=5, warmup_batches=5)
    expected = [2 * _sigmoid(2 / 3), 2 * _sigmoid(3.0), 2 * _sigmoid(-1.0)]
    assert_close(weights, torch.tensor(expected))
    assert_close(weights, torch.tensor([1.32150, 1.90515, 0.53788]), atol=5e-5, rtol=0)
    # Same as the official code's form 2 / (1 + exp(1 - ANT)).
    official = 2 / (1 + torch.exp(1 - gsa_ratio(stats)))
    assert_close(weights, official)


def test_warmup_gives_weight_one_then_the_formula() -> None:
    stats = GSAStats(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 3.0]))
    for batch in range(5):
        assert_close(gsa_class_weights(stats, batch_in_task=batch), torch.ones(2))
    after = gsa_class_weights(stats, batch_in_task=5)
    assert_close(after, torch.tensor([2 * _sigmoid(2.0), 2 * _sigmoid(1 / 3 - 1)]))
    assert_close(gsa_class_weights(stats, batch_in_task=0, warmup_batches=0), after)
    with pytest.raises(ValueError, match="batch_in_task=-1"):
        gsa_class_weights(stats, batch_in_task=-1)


def test_balanced_class_weight_one_and_bounds() -> None:
    stats = GSAStats(torch.tensor([2.0, 0.0, 1e6, 5.0]), torch.tensor([2.0, 7.0, 1.0, 0.0]))
    weights = gsa_class_weights(stats, batch_in_task=10)
    # ANT = 1 -> 1; ANT = 0 -> 2 sigmoid(-1) (the floor); ANT -> inf -> 2; Neg = 0 -> ratio 1.
    assert_close(weights, torch.tensor([1.0, 2 * _sigmoid(-1.0), 2.0, 1.0]))
    assert_close(gsa_ratio(stats)[3], torch.tensor(1.0))


def test_stats_add_up_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(12, 5, generator=g), torch.randint(0, 5, (12,), generator=g)
    first, second = gsa_class_stats(logits[:7], labels[:7]), gsa_class_stats(logits[7:], labels[7:])
    whole = gsa_class_stats(logits, labels)
    assert_close(first.add(second).positive, whole.positive)
    assert_close(first.add(second).negative, whole.negative)


def test_stats_match_the_official_loop() -> None:
    """Transcription of GSA_CVPR/test_cifar100.py: Pos = Category_sum - positive_logits_sum."""
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(9, 4, generator=g), torch.randint(0, 4, (9,), generator=g)
    probs = torch.softmax(logits, dim=1)
    category = torch.zeros(9, 4)
    positive_prob = torch.zeros(9, 4)
    false_prob = probs.clone()
    for i in range(9):
        category[i, labels[i]] = 1
        false_prob[i, labels[i]] = 0
        positive_prob[i, labels[i]] = probs[i, labels[i]]
    stats = gsa_class_stats(logits, labels)
    assert_close(stats.positive, category.sum(0) - positive_prob.sum(0))
    assert_close(stats.negative, false_prob.sum(0))


def test_masked_classes_get_no_mass() -> None:
    logits = torch.tensor([[0.0, 0.0, -math.inf], [1.0, 0.0, -math.inf]])
    stats = gsa_class_stats(logits, torch.tensor([0, 1]))
    assert stats.positive[2] == 0 and stats.negative[2] == 0


def test_loss_hand_worked() -> None:
    """Cross-task: p_y = [0.5, 0.5] with w = [1.0, 0.5] -> shares 2 * w * log 2 / 2.

    Within-task: q_y = 0.25, 0.5 -> shares log 4 / 2, log 2 / 2. Total = 2 L_n + L_p
    = 2 * (log 2 + 0.5 log 2) / 2 + (log 4 + log 2) / 2 = 1.5 log 2 + 1.5 log 2 = 3 log 2.
    """
    cross = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    within = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    weights = torch.tensor([1.0, 7.0, 0.5])
    out = gsa_loss(cross, torch.tensor([0, 2]), within, torch.tensor([0, 1]), weights)
    log2 = math.log(2)
    assert_close(out.cross_task_losses, torch.tensor([log2, 0.5 * log2]))
    assert_close(out.within_task_losses, torch.tensor([log2, 0.5 * log2]))
    total = out.cross_task_losses.sum() + out.within_task_losses.sum()
    assert_close(total, torch.tensor(3 * log2))


def test_loss_gradient_is_weighted_cross_entropy_gradient() -> None:
    """d(2 L_n)/dz_i = 2 w_{y_i} (p_i - onehot(y_i)) / N: the weight scales every push of sample i."""
    g = torch.Generator().manual_seed(2)
    cross = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 2])
    weights = torch.tensor([0.6, 1.5, 1.9], dtype=torch.float64)
    within = torch.randn(2, 2, dtype=torch.float64)
    out = gsa_loss(cross, labels, within, torch.tensor([0, 1]), weights)
    out.cross_task_losses.sum().backward()
    onehot = torch.nn.functional.one_hot(labels, 3).double()
    expected = 2 * weights[labels, None] * (torch.softmax(cross.detach(), 1) - onehot) / 4
    assert cross.grad is not None
    assert_close(cross.grad, expected)


def test_loss_without_replay_is_within_task_only() -> None:
    within = torch.log(torch.tensor([[0.5, 0.5]]))
    out = gsa_loss(
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        within,
        torch.tensor([1]),
        torch.ones(4),
    )
    assert out.cross_task_losses.shape == (0,)
    assert_close(out.within_task_losses, torch.tensor([math.log(2)]))


def test_loss_errors_say_what_and_how() -> None:
    cross, labels = torch.zeros(2, 3), torch.tensor([0, 1])
    within, within_labels = torch.zeros(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"\[C\] = \[3\].*Got shape \(2,\)"):
        gsa_loss(cross, labels, within, within_labels, torch.ones(2))
    with pytest.raises(ValueError, match=r"cross_task_weight must be >= 0\. Got -1"):
        gsa_loss(cross, labels, within, within_labels, torch.ones(3), cross_task_weight=-1)
    with pytest.raises(ValueError, match="current-task batch is empty"):
        gsa_loss(cross, labels, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match=r"logits must be \[N, C\] and labels \[N\]"):
        gsa_class_stats(torch.zeros(3), torch.tensor([0]))
