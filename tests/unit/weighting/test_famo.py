"""FAMO's math against the reference implementation's steps (torch autograd + torch Adam)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from gradbal.weighting.famo import AdamState, adam_step, famo_logit_grad, famo_weights


def test_weights_by_hand() -> None:
    """z = softmax([0, ln 2]) = [1/3, 2/3], L = [1, 4]: z / L = [1/3, 1/6] -> [2/3, 1/3]. The
    gradient of FAMO's loss sum z_i log L_i / c with c = sum z_i / L_i is sum w_i grad L_i."""
    logits = torch.tensor([0.0, torch.log(torch.tensor(2.0)).item()])
    losses = torch.tensor([1.0, 4.0], dtype=torch.float64, requires_grad=True)
    w = famo_weights(logits, losses.detach())
    assert_close(w, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    z = torch.softmax(logits.double(), 0)
    c = (z / losses).sum().detach()
    (z * losses.log() / c).sum().backward()
    assert_close(losses.grad, w)


def test_logit_grad_is_the_softmax_vjp() -> None:
    """Reference code: torch.autograd.grad(softmax(w), w, grad_outputs=delta)."""
    logits = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    delta = torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch.softmax(logits, -1), logits, grad_outputs=delta)
    assert_close(famo_logit_grad(logits.detach(), delta), expected)


def test_adam_step_matches_torch_adam() -> None:
    """Five steps with weight decay (the reference: Adam(lr=0.025, weight_decay=0.01))."""
    gen = torch.Generator().manual_seed(0)
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.025, weight_decay=0.01)
    state = AdamState(torch.zeros(3, dtype=torch.float64), torch.zeros(3), torch.zeros(3))
    state = AdamState(*(t.double() for t in state))
    for step in range(1, 6):
        grad = torch.randn(3, generator=gen, dtype=torch.float64)
        param.grad = grad.clone()
        opt.step()
        state = adam_step(state, grad, step, lr=0.025, weight_decay=0.01)
        assert_close(state.params, param.detach())


def test_a_task_whose_log_loss_falls_faster_loses_weight() -> None:
    """One FAMO step from uniform logits: delta = [0.5, 0.1] (task 0 improved more)."""
    logits = torch.zeros(2, dtype=torch.float64)
    grad = famo_logit_grad(logits, torch.tensor([0.5, 0.1]))
    zeros = torch.zeros(2, dtype=torch.float64)
    new = adam_step(AdamState(logits, zeros, zeros), grad, 1, lr=0.025, weight_decay=0.01)
    losses = torch.ones(2, dtype=torch.float64)
    assert famo_weights(new.params, losses)[0] < 0.5 < famo_weights(new.params, losses)[1]
