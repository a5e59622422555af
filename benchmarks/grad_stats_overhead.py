"""Step-time and peak-memory overhead of per-task gradient capture vs no monitoring and brute force.

Tiny Llama (4 layers, hidden 256, vocab 259), 4 tasks, 32 sequences x 64 tokens (16 groups of 2),
CPU. One step = forward + backward + AdamW step (+ the statistic). Configurations alternate
round-robin after warm-up; the median over repeats is reported. Peak memory is the growth of the
peak RSS (Linux VmHWM, reset after the first step) over 3 steps of one configuration, each in a
fresh subprocess (median of 3), and the size of the share buffers a capture keeps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grad_stats_overhead.py --threads 1 --repeats 15

On a GPU (``--device cuda``) the model is larger (``--preset gpu``: 8 layers, hidden 1024,
vocabulary 32,000, 32 x 512 tokens), steps are timed with ``torch.cuda.synchronize``, ``--dtype
bf16`` runs the forward under bf16 autocast, and peak memory is ``torch.cuda.max_memory_allocated``
over 3 steps after the first, per configuration in a fresh process:

    python benchmarks/grad_stats_overhead.py --device cuda --preset gpu --dtype bf16 --repeats 20
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

NUM_TASKS, ROWS, ROWS_PER_GROUP = 4, 32, 2
PRESETS = {  # name: (vocab, hidden, intermediate, layers, heads, sequence length)
    "tiny": (259, 256, 688, 4, 4, 64),
    "gpu": (32000, 1024, 2816, 8, 16, 512),
}
PRESET, DEVICE, AUTOCAST = "tiny", torch.device("cpu"), False
CONFIGS = ("none", "capture_last_attention_block", "capture_all_linear")
CONFIGS += ("brute_last_attention_block", "brute_all_linear")


def configure(preset: str, device: str, dtype: str) -> None:
    """Set the module-level preset, device and autocast (also in the peak-memory subprocesses)."""
    global PRESET, DEVICE, AUTOCAST
    PRESET, DEVICE, AUTOCAST = preset, torch.device(device), dtype == "bf16"


def make_model() -> nn.Module:
    torch.manual_seed(0)
    vocab, hidden, intermediate, layers, heads, length = PRESETS[PRESET]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=length,
    )
    return LlamaForCausalLM(config).to(DEVICE).train()


def row_losses(model: nn.Module, input_ids: Tensor) -> Tensor:
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AUTOCAST):
        logits = model(input_ids=input_ids).logits[:, :-1]  # [N, T-1, V]
    per_token = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none"
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
        counts = torch.bincount(segments.cpu(), minlength=segments_count) // ROWS_PER_GROUP
        task_grad_stats(shares @ shares.T, counts)
        losses.sum().backward()
        finish()

    return step


def make_batch(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    vocab, length = PRESETS[PRESET][0], PRESETS[PRESET][-1]
    input_ids = torch.randint(0, vocab, (ROWS, length), generator=gen)
    group_ids = torch.arange(ROWS) // ROWS_PER_GROUP
    task_ids = group_ids % NUM_TASKS
    segments = half_split_segments(task_ids, group_ids, NUM_TASKS, generator=gen)
    return input_ids.to(DEVICE), segments.to(DEVICE), group_ids.to(DEVICE)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()  # CUDA runs asynchronously: time the finished work


def time_all(repeats: int, warmup: int) -> dict[str, list[float]]:
    models = {name: make_model() for name in CONFIGS}
    steps = {name: make_step(name, models[name]) for name in CONFIGS}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for i in range(warmup + repeats):
        batch = make_batch(i)
        for name in CONFIGS if i % 2 == 0 else CONFIGS[::-1]:
            _sync()
            start = time.perf_counter()
            steps[name](*batch)
            _sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def measure_peak(name: str, threads: int, preset: str, device: str, dtype: str) -> float:
    """Peak memory growth (MB) over 3 steps of one configuration.

    CPU: RSS (Linux VmHWM after a reset). CUDA: ``max_memory_allocated`` above the allocation
    after the first step.
    """
    configure(preset, device, dtype)
    torch.set_num_threads(threads)
    step = make_step(name, make_model())
    step(*make_batch(0))  # optimizer state and allocator caches exist from here on
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
        for i in range(1, 4):
            step(*make_batch(i))
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start_bytes) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter
    start = _status_kb("VmRSS")
    for i in range(1, 4):
        step(*make_batch(i))
    return (_status_kb("VmHWM") - start) / 1024


def peak_mb(name: str, threads: int) -> float:
    """Run :func:`measure_peak` in a fresh process, so configurations do not share a heap."""
    dtype = "bf16" if AUTOCAST else "fp32"
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import grad_stats_overhead as b;"
        f"print(b.measure_peak({name!r}, {threads}, {PRESET!r}, {DEVICE.type!r}, {dtype!r}))"
    )
    repeats = 1 if DEVICE.type == "cuda" else 3  # the CUDA allocator's peak is deterministic
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(repeats)
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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="tiny")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    configure(args.preset, args.device, args.dtype)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    if DEVICE.type == "cuda":
        print(f"device {torch.cuda.get_device_name()}, preset {PRESET}, dtype {args.dtype}")
    times = time_all(args.repeats, args.warmup)
    memory = {name: peak_mb(name, args.threads) for name in CONFIGS}
    base = statistics.median(times["none"])
    length = PRESETS[PRESET][-1]
    print(
        f"\n{ROWS} x {length} tokens, {NUM_TASKS} tasks x 2 halves, median of {args.repeats} steps\n"
    )
    kind = "CUDA max allocated" if DEVICE.type == "cuda" else "RSS"
    print(
        f"| configuration | median step (ms) | vs none | peak {kind} growth (MB) "
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
