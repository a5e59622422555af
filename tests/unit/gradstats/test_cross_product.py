"""task_grad_stats: hand-worked numbers, unbiasedness in simulation, NaN flags, DDP reduction."""

from __future__ import annotations

import torch

from gradbal.gradstats import task_grad_stats


def test_hand_worked_halves() -> None:
    """Task 0: g_A = (2, 0) from 1 group, g_B = (1, 1) from 2 groups.

    unbiased = <g_A/1, g_B/2> = 1; naive = ||(3, 1)||^2 / 3^2 = 10/9; update: 9 * 1 and 10.
    Task 1: g_A = (0, 1), g_B = (0, -1), one group each: unbiased = -1 (never clamped).
    """
    shares = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    stats = task_grad_stats(shares @ shares.T, torch.tensor([1, 2, 1, 1]))
    torch.testing.assert_close(stats.unbiased_sq, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(stats.naive_sq, torch.tensor([10 / 9, 0.0]))
    torch.testing.assert_close(stats.update_unbiased_sq, torch.tensor([9.0, -4.0]))
    torch.testing.assert_close(stats.update_naive_sq, torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(stats.norm, torch.tensor([1.0, -1.0]))  # signed square root
    torch.testing.assert_close(stats.num_groups, torch.tensor([3.0, 2.0]))
    assert stats.valid.tolist() == [True, True]


def test_all_pairs_form_matches_its_formula() -> None:
    g = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stats = task_grad_stats(g @ g.T, torch.ones(5), segment_tasks=torch.zeros(5, dtype=torch.long))
    expected = (g.sum(0).square().sum() - g.square().sum()) / (5 * 4)
    torch.testing.assert_close(stats.unbiased_sq, expected[None])
    torch.testing.assert_close(stats.naive_sq, (g.mean(0).square().sum())[None])


def test_tasks_without_two_groups_are_nan_and_flagged() -> None:
    shares = torch.tensor([[1.0], [2.0], [0.0], [3.0], [0.0], [0.0]])
    stats = task_grad_stats(shares @ shares.T, torch.tensor([1, 1, 0, 1, 0, 0]))
    assert stats.valid.tolist() == [True, False, False]
    assert stats.unbiased_sq[1:].isnan().all() and stats.norm[1:].isnan().all()
    torch.testing.assert_close(stats.naive_sq[1], torch.tensor(9.0))  # one group: naive only
    assert stats.naive_sq[2].isnan()  # no group at all


def test_cross_product_is_unbiased_and_naive_is_not() -> None:
    """Per-group gradients g_i = mu + noise, Cov = diag(sigma^2); halves of 3 + 3 groups.

    E[unbiased] = ||mu||^2 = 0.5; E[naive] = ||mu||^2 + tr(Cov) / n = 0.5 + 8 / 6.
    """
    gen = torch.Generator().manual_seed(0)
    draws, n, dim = 3000, 6, 8
    mu = torch.zeros(dim, dtype=torch.float64)
    mu[:2] = 0.5
    sigma = torch.ones(dim, dtype=torch.float64)
    per_group = mu + sigma * torch.randn(draws, n, dim, generator=gen, dtype=torch.float64)
    halves = torch.stack([per_group[:, :3].sum(1), per_group[:, 3:].sum(1)], dim=1)  # [D, 2, d]
    pairs = torch.ones(n, dtype=torch.long)
    unbiased, naive, all_pairs = [], [], []
    for d in range(draws):
        stats = task_grad_stats(halves[d] @ halves[d].T, torch.tensor([3, 3]))
        unbiased.append(stats.unbiased_sq)
        naive.append(stats.naive_sq)
        g = per_group[d]
        all_pairs.append(
            task_grad_stats(
                g @ g.T, pairs, segment_tasks=torch.zeros(n, dtype=torch.long)
            ).unbiased_sq
        )
    truth = mu.square().sum()
    bias = sigma.square().sum() / n
    for samples, expected in ((unbiased, truth), (all_pairs, truth), (naive, truth + bias)):
        values = torch.cat(samples)
        stderr = values.std() / draws**0.5
        assert abs(values.mean() - expected) < 4 * stderr, (values.mean(), expected, stderr)
    naive_mean = torch.cat(naive).mean()
    assert naive_mean - truth > 10 * torch.cat(naive).std() / draws**0.5  # visibly biased up


def test_all_reduce_pools_sums_and_counts_across_ranks() -> None:
    """Two ranks: unbiased = (cross_0 + cross_1) / (pairs_0 + pairs_1), not a mean of means."""
    rank0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # 1 group per half: <.,.> = 1, pairs 1
    rank1 = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # 2 groups per half: <.,.> = 3, pairs 4
    counts0, counts1 = torch.tensor([1, 1]), torch.tensor([2, 2])
    sent: list[torch.Tensor] = []
    task_grad_stats(rank1 @ rank1.T, counts1, all_reduce=lambda t: sent.append(t) or t)
    stats = task_grad_stats(rank0 @ rank0.T, counts0, all_reduce=lambda t: t + sent[0])
    torch.testing.assert_close(stats.unbiased_sq, torch.tensor([(1 + 3) / (1 + 4)]))
    torch.testing.assert_close(stats.num_groups, torch.tensor([6.0]))
    torch.testing.assert_close(stats.update_unbiased_sq, torch.tensor([36 * 4 / 5]))
    torch.testing.assert_close(stats.naive_sq, torch.tensor([(4 + 16) / (4 + 16)]))


def test_fp64_gram_keeps_fp64() -> None:
    stats = task_grad_stats(torch.eye(2, dtype=torch.float64), torch.tensor([1, 1]))
    assert stats.unbiased_sq.dtype == torch.float64
