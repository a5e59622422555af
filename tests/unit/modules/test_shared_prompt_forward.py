"""GRPO's shared-prompt forward: each group's prompt encoded once, the same log-probs and
gradients as the one-pass forward, a gradient capture that splits it by group, and the full
forward wherever the cache cannot be reused."""

from __future__ import annotations

import pytest
import torch

from gradbal.gradstats import TaskGradCapture, check_row_alignment, half_split_segments
from gradbal.models import LoRA, TinyPolicy
from gradbal.modules._sequences import (
    Sequences,
    completion_logprobs,
    completion_mask,
    join,
    tokenize_prompts,
)

PROMPTS = ["add 12+34=", "a longer prompt: rev abcdef=", "x"]
G = 4


def _batch(tok: object, seed: int = 0, width: int = 7) -> Sequences:
    ids, mask = tokenize_prompts(tok, PROMPTS, None, torch.device("cpu"))  # type: ignore[arg-type]
    gen = torch.randint(
        3, 200, (len(PROMPTS) * G, width), generator=torch.Generator().manual_seed(seed)
    )
    gen[0, 2] = tok.eos_token_id  # type: ignore[attr-defined]  # one short completion
    gen[5, 0] = tok.eos_token_id  # type: ignore[attr-defined]  # and one of a single token
    cmask, _ = completion_mask(gen, tok.eos_token_id)  # type: ignore[attr-defined]
    return join(ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0), gen, cmask)


class _Calls:
    """Record the batch shape of every call of the model's forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, ...]] = []
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        target.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: object, args: tuple, kwargs: dict) -> None:
        self.shapes.append(tuple(kwargs["input_ids"].shape))


def _logprobs_and_grads(
    model: torch.nn.Module, seqs: Sequences, group_size: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    lp = completion_logprobs(model, seqs, 0.7, group_size=group_size)
    weights = torch.linspace(-1, 1, lp.numel()).view_as(lp)  # a loss that is not symmetric
    (lp * weights * seqs.completion_mask).sum().backward()
    return lp.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompt_forward_gives_the_full_forwards_logprobs_and_gradients(
    family: str, lora: bool
) -> None:
    model, tok = TinyPolicy(
        hidden_size=32,
        num_layers=2,
        family=family,
        seed=1,
        lora=LoRA(r=2) if lora else None,  # type: ignore[arg-type]
    ).build()
    model.train()
    if lora:  # LoRA B starts at zero: give the adapters a gradient everywhere
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    seqs = _batch(tok)
    calls = _Calls(model)
    full_lp, full_grads = _logprobs_and_grads(model, seqs, 1)
    assert calls.shapes == [tuple(seqs.input_ids.shape)]
    calls.shapes.clear()
    lp, grads = _logprobs_and_grads(model, seqs, G)
    n, p = seqs.input_ids.shape[0], seqs.prompt_length
    c = seqs.completion_mask.shape[1]
    assert calls.shapes == [(n // G, p), (n, c - 1)]  # prompts once, completions from the cache
    torch.testing.assert_close(lp, full_lp, atol=2e-5, rtol=1e-5)
    assert len(grads) == len(full_grads) > 0
    for got, want in zip(grads, full_grads, strict=True):  # float rounding only
        assert (got - want).norm() <= 1e-4 * want.norm() + 1e-7


def test_gradient_checkpointing_and_differing_prompts_use_the_full_forward() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=1).build()
    model.train()
    seqs = _batch(tok)
    calls = _Calls(model)
    want = completion_logprobs(model, seqs, group_size=1).detach()

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    calls.shapes.clear()
    got = completion_logprobs(model, seqs, group_size=G)
    assert calls.shapes == [tuple(seqs.input_ids.shape)]  # the cache would be dropped
    torch.testing.assert_close(got.detach(), want, atol=1e-6, rtol=1e-6)
    calls.shapes.clear()
    with torch.no_grad():  # no replay without grad: the cache is kept, the prompt shared
        shared = completion_logprobs(model, seqs, group_size=G)
    assert len(calls.shapes) == 2
    torch.testing.assert_close(shared, want, atol=2e-5, rtol=1e-5)
    model.gradient_checkpointing_disable()

    ids = seqs.input_ids.clone()
    ids[1, seqs.prompt_length - 1] += 1  # row 1's prompt differs from its group's
    odd = seqs._replace(input_ids=ids)
    calls.shapes.clear()
    completion_logprobs(model, odd, group_size=G)
    assert calls.shapes == [tuple(seqs.input_ids.shape)]


@pytest.mark.parametrize("selection", ["last_attention_block", "all_linear"])
def test_capture_splits_the_shared_prompt_forward_by_group(selection: str) -> None:
    """Each segment's share (and so the Gram) is the one-pass forward's: the prompt layers see
    one row per group, and each group row's gradient belongs to its group's segment."""
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=4).build()
    model.train()
    seqs = _batch(tok, seed=1)
    n = seqs.input_ids.shape[0]
    group_ids = torch.arange(n // G).repeat_interleave(G)
    task_ids = torch.tensor([0, 1, 0]).repeat_interleave(G)
    segments = half_split_segments(
        task_ids, group_ids, 2, generator=torch.Generator().manual_seed(0)
    )
    shares = []
    for group_size in (1, G):
        capture = TaskGradCapture(model, selection)
        with capture:
            capture.set_segments(segments, 4, group_ids)
            lp = completion_logprobs(model, seqs, group_size=group_size)
            (lp * seqs.completion_mask).sum().backward()
        assert not capture.missed_layers() and capture.captured_layers
        shares.append({k: v.clone() for k, v in capture.segment_grads().items()})
        model.zero_grad()
    assert shares[0].keys() == shares[1].keys()
    for name in shares[0]:
        for got, want in zip(shares[1][name], shares[0][name], strict=True):  # per segment
            assert (got - want).norm() <= 1e-4 * want.norm() + 1e-7


def test_row_alignment_probe_checks_group_rows_and_finds_a_misaligned_group() -> None:
    model, tok = TinyPolicy(hidden_size=32, num_layers=2, seed=4).build()
    model.train()
    seqs = _batch(tok, seed=2)
    n = seqs.input_ids.shape[0]
    group_ids = torch.arange(n // G).repeat_interleave(G)
    capture = TaskGradCapture(model, "last_attention_block")
    with capture:
        capture.keep_outputs()
        lp = completion_logprobs(model, seqs, group_size=G)
        outputs = capture.take_outputs()
    assert {out.shape[0] for out in outputs.values()} == {n // G, n}  # both calls kept
    losses = (lp * seqs.completion_mask).sum(1)  # [N], row i's loss
    with TaskGradCapture.paused():
        ok = check_row_alignment(losses, group_ids, outputs)
        swapped = losses.view(n // G, G)[[1, 0, 2]].reshape(n)  # groups 0 and 1 exchanged
        bad = check_row_alignment(swapped, group_ids, outputs)
    assert ok.layer is None and ok.checked_rows > 0
    assert bad.layer is not None
