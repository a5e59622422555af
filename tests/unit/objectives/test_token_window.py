"""TokenWindow: deferred normalisation gives every token of the window the weight 1 / N."""

from __future__ import annotations

import pytest
import torch

from gradbal.objectives import DAPOAggregation, TokenWindow, group_advantages


def _window_gradient(counts: list[list[int]], accumulate: int) -> tuple[torch.Tensor, float]:
    """Simulate Lightning + DDP: micro-batch losses / K, averaged over ranks, then rescaled.

    ``counts[k][r]``: active tokens of micro-batch ``k`` on rank ``r``; each token's loss is
    ``w * 1`` for one shared parameter ``w``, so d(loss)/dw counts weighted tokens.
    """
    world = len(counts[0])
    window = TokenWindow(world, accumulate)
    w = torch.zeros((), requires_grad=True)
    for per_rank in counts:
        global_tokens = torch.tensor(float(sum(per_rank)))
        normaliser = window.normaliser(global_tokens)
        losses = []
        for n in per_rank:
            per_token = (w + 1.0) * torch.ones(1, max(n, 1))
            mask = torch.arange(max(n, 1)).unsqueeze(0) < n
            shares = DAPOAggregation()(
                per_token, mask, max_completion_length=max(n, 1), global_num_tokens=normaliser
            )
            losses.append(shares.sum())
        (torch.stack(losses).mean() / accumulate).backward()  # DDP mean, Lightning's 1 / K
        window.add(global_tokens, torch.stack(losses).sum())
    assert w.grad is not None
    return w.grad * window.rescale(), window.rescale()


@pytest.mark.parametrize(
    "counts",
    [[[3, 5]], [[3, 5], [1, 0]], [[4], [2], [7]], [[1, 0]], [[0, 0], [2, 1]], [[0, 0]]],
)
def test_every_token_weighs_one_over_the_window_count(counts: list[list[int]]) -> None:
    grad, _ = _window_gradient(counts, accumulate=len(counts))
    total = sum(map(sum, counts))
    assert float(grad) == pytest.approx(1.0 if total else 0.0, rel=1e-6)


def test_short_window_at_an_epoch_end() -> None:
    """Lightning divides by K even when an epoch ends after fewer micro-batches."""
    grad, _ = _window_gradient([[2, 3]], accumulate=2)
    assert float(grad) == pytest.approx(1.0, rel=1e-6)


def test_no_rescale_without_accumulation() -> None:
    for tokens in (1.0, 3.0, 7.0, 1000003.0):
        window = TokenWindow(world_size=3, accumulate=1)
        window.normaliser(torch.tensor(tokens))
        window.add(torch.tensor(tokens), torch.tensor(1.0))
        assert window.rescale() == 1.0


def test_step_loss_is_the_window_token_mean() -> None:
    window = TokenWindow(world_size=1, accumulate=2)
    d = window.normaliser(torch.tensor(2.0))  # 2 tokens with loss 1 each, then 6 with loss 3
    window.add(torch.tensor(2.0), torch.tensor(2.0) / d)
    window.add(torch.tensor(6.0), torch.tensor(18.0) / d)
    step_loss = window.step_loss()
    assert step_loss is not None
    assert float(step_loss) == pytest.approx(20.0 / 8)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="world_size and accumulate must be >= 1"):
        TokenWindow(world_size=0)


def test_batch_std_overrides_the_local_std() -> None:
    rewards = torch.tensor([0.0, 1.0, 1.0, 1.0])
    local = group_advantages(rewards, 2, "batch")
    given = group_advantages(rewards, 2, "batch", batch_std=torch.tensor(2.0))
    torch.testing.assert_close(given, torch.tensor([-0.5, 0.5, 0.0, 0.0]) / (2.0 + 1e-4))
    assert not torch.allclose(local, given)
    # other scales ignore it
    torch.testing.assert_close(
        group_advantages(rewards, 2, "group", batch_std=torch.tensor(2.0)),
        group_advantages(rewards, 2, "group"),
    )
