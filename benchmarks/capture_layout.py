"""The capture's accumulation alone, with the share buffers in block order or in segment order.

One backward of SmolLM2-135M-Instruct with LoRA r16 on every linear layer, on
``grad_stats_overhead.py --preset smollm2``'s batch (8 chat prompts x 4 completions, 4 tasks x 2
halves, one group per half), records every measured layer's (input, output gradient). Then the
accumulation of all of them is timed in alternating rounds, in one process, two ways:

- segment order: the plan of the segments as given (every block's gradient by one ``bmm``, added
  to its segment by ``index_add_``), what the capture did before;
- block order: the plan of the segments renamed to the buffer slots that ``TaskGradCapture``
  now chooses when each segment is one block (one ``baddbmm_`` straight into the buffer).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/capture_layout.py --rounds 8 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import grad_stats_overhead as bench

import gradbal.gradstats.capture as capture_module
from gradbal.gradstats import TaskGradCapture
from gradbal.gradstats._layer_grads import (
    SegmentPlan,
    accumulate_dense,
    block_slots,
    in_slots,
    make_plan,
)
from gradbal.gradstats.segments import group_segment_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench.configure("smollm2", "cpu", "fp32")
    model = bench.make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        capture = TaskGradCapture(model, "trainable")
    calls: list[tuple[torch.Size, torch.Tensor, torch.Tensor, int]] = []

    def record(weight, bias, x, dy, plan, *, weight_is_in_out):  # type: ignore[no-untyped-def]
        calls.append((weight.shape, x.detach(), dy.detach(), plan.num_rows))
        accumulate_dense(weight, bias, x, dy, plan, weight_is_in_out=weight_is_in_out)

    capture_module.accumulate_dense = record  # type: ignore[assignment]
    inputs, segments, group_ids = bench.make_batch(1)
    with capture:
        capture.set_segments(segments, 2 * bench.NUM_TASKS, group_ids)
        bench.row_losses(model, inputs).sum().backward()
    s = 2 * bench.NUM_TASKS
    per_group = group_segment_ids(segments, group_ids)
    plain = {len(segments): make_plan(segments, s), len(per_group): make_plan(per_group, s)}
    slots = block_slots(plain[len(segments)])
    if slots is None:
        raise SystemExit("this batch's segments are not one block each: no block layout")
    blocked = {
        n: make_plan(in_slots(seg, slots), s)
        for n, seg in ((len(segments), segments), (len(per_group), per_group))
    }
    buffers = [torch.zeros(shape) for shape, *_ in calls]

    def run(plans: dict[int, SegmentPlan]) -> float:
        start = time.perf_counter()
        for buffer, (_, x, dy, rows) in zip(buffers, calls, strict=True):
            accumulate_dense(buffer, None, x, dy, plans[rows], weight_is_in_out=False)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"segment order": [], "block order": []}
    run(plain), run(blocked)  # warm-up
    for r in range(args.rounds):
        for name in ("segment order", "block order") if r % 2 else ("block order", "segment order"):
            times[name].append(run(plain if name == "segment order" else blocked))
    print(f"{len(calls)} layer calls, {args.rounds} alternating rounds, {args.threads} threads")
    print("| layout | median ms | min ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        ms = [1e3 * v for v in values]
        print(f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")
    ratio = statistics.median(times["block order"]) / statistics.median(times["segment order"])
    print(f"block order / segment order = {ratio:.3f}")


if __name__ == "__main__":
    main()
