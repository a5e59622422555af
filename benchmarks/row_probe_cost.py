"""Cost of TaskGradNormMonitor's row-alignment probe: one measured step with and without it.

A measured step here is what the monitor does around the training step: capture attached,
forward, ``set_segments``, (probe: ``check_row_alignment`` on the first and last measured layers'
outputs), backward, ``gram``. Tiny config-built Llama (hidden 32, 2 layers, fp32), CPU, one thread.

    OMP_NUM_THREADS=1 python benchmarks/row_probe_cost.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from gradbal.gradstats import TaskGradCapture, check_row_alignment, half_split_segments

ROWS, LENGTH, VOCAB, REPEATS = 24, 32, 256, 9


def step(model: nn.Module, capture: TaskGradCapture, ids: torch.Tensor, probe: bool) -> float:
    task_ids = torch.arange(ROWS) % 3
    groups = torch.arange(ROWS)
    start = time.perf_counter()
    with capture:
        if probe:
            capture.keep_outputs()
        logits = model(input_ids=ids).logits[:, :-1]  # [N, T-1, V]
        losses = (
            nn.functional.cross_entropy(
                logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
            )
            .view(ROWS, -1)
            .mean(1)
            / ROWS
        )  # [N]
        capture.set_segments(half_split_segments(task_ids, groups, 3, generator=None), 6, groups)
        if probe:
            kept = capture.take_outputs()
            names = list(kept)
            kept = {n: kept[n] for n in dict.fromkeys([names[0], names[-1]])}
            with capture.paused():
                assert check_row_alignment(losses, groups, kept).layer is None
        losses.sum().backward()
        capture.gram()
    capture.reset()
    model.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, VOCAB, (ROWS, LENGTH))
    for selection in ("last_attention_block", "all_linear"):
        capture = TaskGradCapture(model, selection)
        for probe in (False, True):
            step(model, capture, ids, probe)  # warm-up
        times = {p: [step(model, capture, ids, p) for _ in range(REPEATS)] for p in (False, True)}
        off, on = (statistics.median(times[p]) * 1e3 for p in (False, True))
        print(
            f"{selection}: measured step {off:.1f} ms without probe, {on:.1f} ms with it "
            f"(+{on - off:.1f} ms, x{on / off:.2f}; median of {REPEATS}, {ROWS} rows x {LENGTH})"
        )


if __name__ == "__main__":
    main()
