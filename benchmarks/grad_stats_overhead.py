"""Step-time and peak-memory overhead of per-task gradient capture vs no monitoring and brute force.

Tiny Llama (4 layers, hidden 256, vocab 259), 4 tasks, 32 sequences x 64 tokens (16 groups of 2),
CPU. One step = forward + backward + AdamW step (+ the statistic). Configurations alternate
round-robin after warm-up; the median over repeats is reported. Peak memory is the growth of the
peak RSS (Linux VmHWM, reset after the first step) over 3 steps of one configuration, each in a
fresh subprocess (median of 3), and the size of the share buffers a capture keeps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grad_stats_overhead.py --threads 1 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from gradbal.gradstats import TaskGradCapture, half_split_segments, select_modules, task_grad_stats

NUM_TASKS, ROWS, LENGTH, ROWS_PER_GROUP = 4, 32, 64, 2
CONFIGS = ("none", "capture_last_attention_block", "capture_all_linear")
CONFIGS += ("brute_last_attention_block", "brute_all_linear")


def make_model() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=259,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=LENGTH,
    )
    return LlamaForCausalLM(config).train()


def row_losses(model: nn.Module, input_ids: Tensor) -> Tensor:
    logits = model(input_ids=input_ids).logits[:, :-1]  # [N, T-1, V]
    per_token = nn.functional.cross_entropy(
        logits.flatten(0, 1), input_ids[:, 1:].flatten(), reduction="none"
    )
    return per_token.view(ROWS, -1).mean(1) / ROWS  # [N] shares of the mean loss


def make_step(name: str, model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    segments_count = 2 * NUM_TASKS

    def finish() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if name == "none":

        def step(input_ids: Tensor, segments: Tensor, group_ids: Tensor) -> None:
            row_losses(model, input_ids).sum().backward()
            finish()

        return step
    selection = name.split("_", 1)[1]
    if name.startswith("capture"):
        capture = TaskGradCapture(model, selection).attach()

        def step(input_ids: Tensor, segments: Tensor, group_ids: Tensor) -> None:
            capture.set_segments(segments, segments_count, group_ids)
            row_losses(model, input_ids).sum().backward()
            task_grad_stats(capture.gram(), capture.groups_per_segment())
            capture.reset()
            finish()

        return step
    params = [p for _, m in select_modules(model, selection) for p in m.parameters(recurse=False)]

    def step(input_ids: Tensor, segments: Tensor, group_ids: Tensor) -> None:
        losses = row_losses(model, input_ids)
        flat = []
        for s in range(segments_count):
            grads = torch.autograd.grad(losses[segments == s].sum(), params, retain_graph=True)
            flat.append(torch.cat([g.flatten() for g in grads]))
        shares = torch.stack(flat)  # [S, P]
        counts = torch.bincount(segments, minlength=segments_count) // ROWS_PER_GROUP
        task_grad_stats(shares @ shares.T, counts)
        losses.sum().backward()
        finish()

    return step


def make_batch(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 259, (ROWS, LENGTH), generator=gen)
    group_ids = torch.arange(ROWS) // ROWS_PER_GROUP
    task_ids = group_ids % NUM_TASKS
    return input_ids, half_split_segments(task_ids, group_ids, NUM_TASKS, generator=gen), group_ids


def time_all(repeats: int, warmup: int) -> dict[str, list[float]]:
    models = {name: make_model() for name in CONFIGS}
    steps = {name: make_step(name, models[name]) for name in CONFIGS}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for i in range(warmup + repeats):
        batch = make_batch(i)
        for name in CONFIGS if i % 2 == 0 else CONFIGS[::-1]:
            start = time.perf_counter()
            steps[name](*batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def measure_peak(name: str, threads: int) -> float:
    """Peak RSS growth (MB) over 3 steps of one configuration (Linux: VmHWM after a reset)."""
    torch.set_num_threads(threads)
    step = make_step(name, make_model())
    step(*make_batch(0))  # optimizer state and allocator caches exist from here on
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter
    start = _status_kb("VmRSS")
    for i in range(1, 4):
        step(*make_batch(i))
    return (_status_kb("VmHWM") - start) / 1024


def peak_rss_mb(name: str, threads: int) -> float:
    """Run :func:`measure_peak` in a fresh process, so configurations do not share a heap."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import grad_stats_overhead as b;"
        f"print(b.measure_peak({name!r}, {threads}))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(3)
    ]
    return statistics.median(float(r.stdout.strip().splitlines()[-1]) for r in runs)


def share_buffer_mb(name: str) -> float:
    """Size of the fp32 per-segment share buffers a capture configuration keeps until reset."""
    if not name.startswith("capture"):
        return 0.0
    model = make_model()
    measured = TaskGradCapture(model, name.split("_", 1)[1]).measured_params
    numel = sum(p.numel() for n, p in model.named_parameters() if n in measured)
    return 2 * NUM_TASKS * numel * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    times = time_all(args.repeats, args.warmup)
    memory = {name: peak_rss_mb(name, args.threads) for name in CONFIGS}
    base = statistics.median(times["none"])
    print(
        f"\n{ROWS} x {LENGTH} tokens, {NUM_TASKS} tasks x 2 halves, median of {args.repeats} steps\n"
    )
    print(
        "| configuration | median step (ms) | vs none | peak RSS growth (MB, median of 3) "
        "| vs none (MB) | share buffers (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in CONFIGS:
        median = statistics.median(times[name])
        extra = memory[name] - memory["none"]
        print(
            f"| {name} | {1000 * median:.1f} | {median / base:.3f}x | {memory[name]:.0f} "
            f"| {extra:+.0f} | {share_buffer_mb(name):.1f} |"
        )


if __name__ == "__main__":
    main()
