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

``--preset smollm2`` measures the shipped real model: SmolLM2-135M-Instruct (fp32) with LoRA r16
(alpha 32) on every linear layer, and a GRPO-sized batch like ``configs/real/grpo_demo.yaml``'s:
8 chat-templated prompts of the four chat tasks (2 each) x 4 completions = 32 sequences, each
completion 48 tokens (the ``max_new_tokens`` of ``configs/real/grpo_multitask.yaml``; random
non-special tokens: the time depends on the shapes, not the text). One step = the GRPO loss
(temperature 0.7 log-probs of the completion tokens, scored as ``GRPOModule`` does with each
prompt encoded once per group, clipped surrogate with group advantages of
random 0/1 rewards, DAPO token mean) + backward + AdamW on the adapters. Configurations: no
capture, and a TaskGradNormMonitor-equivalent capture (two random halves per task,
``task_grad_stats`` after the backward) of the last attention block, of the LoRA parameters
(selection ``trainable``) and of ``all_linear``; brute force is left out (8 extra backwards).
Without ``--frozen`` only trainable weights are measured, so ``all_linear`` is every LoRA linear
layer (the frozen base layers and ``lm_head`` are skipped); with ``--frozen`` the captures also
measure the gradient the frozen base weights would have (``include_frozen=True``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/grad_stats_overhead.py --preset smollm2 \\
        --threads 2 --repeats 10 --warmup 2

Besides the ratio of medians, the table gives the median of the paired ratios (each step over
the no-capture step on the same batch, run a moment apart, with their quartiles), and on the CPU
the time spent inside the capture's own code per step (its forward and backward hooks,
``set_segments``, the Gram, the statistic and ``reset``) with the ratio it implies,
``(none + that) / none``: a lower bound on the overhead that other processes cannot inflate much,
while the wall-clock ratios also carry what the capture costs outside its code (memory traffic,
allocation) and the machine's noise. ``--configs`` times a subset (``none`` always runs).

``--clock process`` times steps with ``time.process_time`` (CPU time of the process, all its
threads) instead of wall time: less sensitive to other processes on a busy machine.
``--memory-repeats`` sets how many fresh processes measure each configuration's peak memory
(default 3 on CPU, 1 on CUDA and for ``smollm2``; 0 skips the memory columns).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from gradbal.gradstats import TaskGradCapture, half_split_segments, select_modules, task_grad_stats

NUM_TASKS, ROWS = 4, 32
PRESETS = {  # name: (vocab, hidden, intermediate, layers, heads, sequence length)
    "tiny": (259, 256, 688, 4, 4, 64),
    "gpu": (32000, 1024, 2816, 8, 16, 512),
    "smollm2": (49152, 576, 1536, 30, 9, 48),  # the shipped model; length: completion tokens
}
PRESET, DEVICE, AUTOCAST, FROZEN = "tiny", torch.device("cpu"), False, False
SYNTHETIC_CONFIGS: tuple[str, ...] = ("none", "capture_last_attention_block", "capture_all_linear")
SYNTHETIC_CONFIGS += ("brute_last_attention_block", "brute_all_linear")
SMOLLM2_CONFIGS: tuple[str, ...] = (
    "none",
    "capture_last_attention_block",
    "capture_lora",
    "capture_all_linear",
)
CONFIGS = SYNTHETIC_CONFIGS
ROWS_PER_GROUP = 2  # completions per prompt (4 for smollm2, as in configs/real)
SELECTIONS = {"lora": "trainable"}  # configuration suffix -> TaskGradCapture selection
SMOLLM2_TEMPERATURE, SMOLLM2_PROMPTS_PER_TASK = 0.7, 2
_TOKENIZER: list[Any] = []  # the SmolLM2 tokenizer, set by make_model
#: Issue 13's goals for TaskGradNormMonitor on SmolLM2 every step (step time vs none).
GOALS = {
    "capture_last_attention_block": "<= 1.05x",
    "capture_lora": "<= 1.10x",
    "capture_all_linear": "<= 1.35x",
}
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def configure(preset: str, device: str, dtype: str, frozen: bool = False) -> None:
    """Set the module-level preset, device, autocast and frozen-weight capture (also in the
    peak-memory subprocesses)."""
    global PRESET, DEVICE, AUTOCAST, FROZEN, CONFIGS, ROWS_PER_GROUP
    PRESET, DEVICE, AUTOCAST, FROZEN = preset, torch.device(device), dtype == "bf16", frozen
    CONFIGS = SMOLLM2_CONFIGS if preset == "smollm2" else SYNTHETIC_CONFIGS
    ROWS_PER_GROUP = 4 if preset == "smollm2" else 2


def _selection(name: str) -> str:
    suffix = name.split("_", 1)[1]
    return SELECTIONS.get(suffix, suffix)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    if PRESET == "smollm2":
        from gradbal.models import LoRA, PretrainedPolicy

        policy = PretrainedPolicy(
            "smollm2-135m-instruct", dtype="float32", lora=LoRA(r=16, alpha=32)
        )
        model: nn.Module
        model, tokenizer = policy.build()
        _TOKENIZER[:] = [tokenizer]
        return model.to(DEVICE).train()
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


Batch = tuple[dict[str, Tensor], Tensor, Tensor]  # model inputs, segments, group ids


def row_losses(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """``[N]`` each row's share of the step's loss."""
    if PRESET == "smollm2":
        return grpo_row_losses(model, inputs)
    input_ids = inputs["input_ids"]
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AUTOCAST):
        logits = model(input_ids=input_ids).logits[:, :-1]  # [N, T-1, V]
    per_token = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none"
    )
    return per_token.view(ROWS, -1).mean(1) / ROWS  # [N] shares of the mean loss


def grpo_row_losses(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """GRPOModule's loss (one iteration, no KL): clipped surrogate, DAPO token mean."""
    from gradbal.modules._sequences import Sequences, completion_logprobs
    from gradbal.objectives import DAPOAggregation, grpo_token_loss

    seqs = Sequences(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["completion_mask"],
        int(inputs["prompt_length"]),
    )
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AUTOCAST):
        # as GRPOModule scores them: each prompt encoded once for its group's completions
        pi = completion_logprobs(model, seqs, SMOLLM2_TEMPERATURE, group_size=ROWS_PER_GROUP)
    out = grpo_token_loss(pi, pi.detach(), inputs["advantages"], epsilon_high=0.28)
    length = seqs.completion_mask.shape[1]
    return DAPOAggregation()(out.per_token_loss, seqs.completion_mask, max_completion_length=length)


#: Per configuration, per step: seconds spent in the capture's hooks, segments, Gram and reset.
IN_CAPTURE: dict[str, list[float]] = {}


def _timed(inner: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.perf_counter() - start

    return timed


def make_step(name: str, model: nn.Module) -> Callable[[dict[str, Tensor], Tensor, Tensor], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    segments_count = 2 * NUM_TASKS

    def finish() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if name == "none":

        def step(inputs: dict[str, Tensor], segments: Tensor, group_ids: Tensor) -> None:
            row_losses(model, inputs).sum().backward()
            finish()

        return step
    selection = _selection(name)
    if name.startswith("capture"):
        with warnings.catch_warnings():  # frozen layers listed in capture.skipped
            warnings.simplefilter("ignore")
            capture = TaskGradCapture(model, selection, include_frozen=FROZEN)
        spent = [0.0]  # this step's seconds inside the capture's own code (CPU: synchronous)
        for hook in ("_on_forward", "_on_backward"):  # instance attributes, before attach
            setattr(capture, hook, _timed(getattr(capture, hook), spent))
        capture.attach()

        def step(inputs: dict[str, Tensor], segments: Tensor, group_ids: Tensor) -> None:
            spent[0] = 0.0
            start = time.perf_counter()
            capture.set_segments(segments, segments_count, group_ids)
            spent[0] += time.perf_counter() - start
            row_losses(model, inputs).sum().backward()
            start = time.perf_counter()
            task_grad_stats(capture.gram(), capture.groups_per_segment())
            capture.reset(keep_buffers=True)  # as the monitor does when it measures every step
            spent[0] += time.perf_counter() - start
            IN_CAPTURE.setdefault(name, []).append(spent[0])
            finish()

        return step
    params = [p for _, m in select_modules(model, selection) for p in m.parameters(recurse=False)]

    def step(inputs: dict[str, Tensor], segments: Tensor, group_ids: Tensor) -> None:
        losses = row_losses(model, inputs)
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


def make_batch(seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    vocab, length = PRESETS[PRESET][0], PRESETS[PRESET][-1]
    group_ids = torch.arange(ROWS) // ROWS_PER_GROUP
    task_ids = group_ids % NUM_TASKS
    segments = half_split_segments(task_ids, group_ids, NUM_TASKS, generator=gen)
    if PRESET == "smollm2":
        inputs = smollm2_inputs(seed, gen, group_ids)
    else:
        inputs = {"input_ids": torch.randint(0, vocab, (ROWS, length), generator=gen)}
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    return inputs, segments.to(DEVICE), group_ids.to(DEVICE)


def smollm2_inputs(seed: int, gen: torch.Generator, group_ids: Tensor) -> dict[str, Tensor]:
    """8 chat-templated prompts of the 4 chat tasks (group ``i`` is task ``i % 4``, as the
    segments assume) x 4 completions of 48 random non-special tokens, with group advantages of
    random 0/1 rewards, in GRPOModule's ``[pad | prompt | completion]`` layout."""
    from gradbal.modules._sequences import format_prompts, tokenize_prompts
    from gradbal.objectives import group_advantages
    from gradbal.tasks import ChatAddition, ChatComparison, ChatMultiplication, ChatWordProblem

    assert _TOKENIZER, "make_model() loads the tokenizer"
    tokenizer = _TOKENIZER[0]
    classes = (ChatAddition, ChatMultiplication, ChatComparison, ChatWordProblem)
    n = SMOLLM2_PROMPTS_PER_TASK
    tasks = [cls(n_train=n, n_val=1, seed=seed).load() for cls in classes]
    num_prompts = ROWS // ROWS_PER_GROUP
    prompts = [tasks[i % NUM_TASKS].train[i // NUM_TASKS]["prompt"] for i in range(num_prompts)]
    ids, mask = tokenize_prompts(
        tokenizer, format_prompts(tokenizer, prompts, "auto"), None, torch.device("cpu")
    )
    length = PRESETS[PRESET][-1]
    special = set(tokenizer.all_special_ids)
    regular = torch.tensor([t for t in range(1000, 20000) if t not in special])
    completions = regular[torch.randint(0, regular.numel(), (ROWS, length), generator=gen)]
    cmask = torch.ones(ROWS, length, dtype=torch.bool)
    rewards = torch.randint(0, 2, (ROWS,), generator=gen).float()
    return {
        "input_ids": torch.cat([ids.repeat_interleave(ROWS_PER_GROUP, 0), completions], 1),
        "attention_mask": torch.cat([mask.repeat_interleave(ROWS_PER_GROUP, 0), cmask.long()], 1),
        "completion_mask": cmask,
        "prompt_length": torch.tensor(ids.shape[1]),
        "advantages": group_advantages(rewards, ROWS_PER_GROUP, "group"),
    }


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()  # CUDA runs asynchronously: time the finished work


def time_all(repeats: int, warmup: int, clock: str = "wall") -> dict[str, list[float]]:
    now = CLOCKS[clock]
    models = {name: make_model() for name in CONFIGS}
    steps = {name: make_step(name, models[name]) for name in CONFIGS}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for i in range(warmup + repeats):
        batch = make_batch(i)
        for name in CONFIGS if i % 2 == 0 else CONFIGS[::-1]:
            _sync()
            start = now()
            steps[name](*batch)
            _sync()
            if i >= warmup:
                times[name].append(now() - start)
            elif name in IN_CAPTURE:
                IN_CAPTURE[name].pop()  # a warm-up step
    return times


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def measure_peak(
    name: str, threads: int, preset: str, device: str, dtype: str, frozen: bool = False
) -> float:
    """Peak memory growth (MB) over 3 steps of one configuration.

    CPU: RSS (Linux VmHWM after a reset). CUDA: ``max_memory_allocated`` above the allocation
    after the first step.
    """
    configure(preset, device, dtype, frozen)
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


def peak_mb(name: str, threads: int, repeats: int) -> float:
    """Median of :func:`measure_peak` in ``repeats`` fresh processes (configurations do not
    share a heap)."""
    dtype = "bf16" if AUTOCAST else "fp32"
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import grad_stats_overhead as b;"
        f"print(b.measure_peak({name!r}, {threads}, {PRESET!r}, {DEVICE.type!r}, {dtype!r}, "
        f"{FROZEN!r}))"
    )
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = TaskGradCapture(model, _selection(name), include_frozen=FROZEN).measured_params
    numel = sum(p.numel() for n, p in model.named_parameters() if n in measured)
    return 2 * NUM_TASKS * numel * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="tiny")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated subset of the preset's configurations to time ('none' is always "
        "included: the ratios are against it)",
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: time.perf_counter; process: time.process_time (CPU time, all threads)",
    )
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=None,
        help="fresh processes per configuration for peak memory (default 3 on CPU, 1 on CUDA "
        "and for smollm2; 0: skip)",
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="captures also measure frozen weights (include_frozen=True, e.g. LoRA base layers)",
    )
    args = parser.parse_args()
    configure(args.preset, args.device, args.dtype, args.frozen)
    if args.configs is not None:
        global CONFIGS
        wanted = {"none", *args.configs.split(",")}
        if not wanted <= set(CONFIGS):
            parser.error(f"--configs: unknown {sorted(wanted - set(CONFIGS))}; use {CONFIGS}")
        CONFIGS = tuple(c for c in CONFIGS if c in wanted)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    if DEVICE.type == "cuda":
        print(f"device {torch.cuda.get_device_name()}, preset {PRESET}, dtype {args.dtype}")
    times = time_all(args.repeats, args.warmup, args.clock)
    memory_repeats = args.memory_repeats
    if memory_repeats is None:  # the CUDA allocator's peak is deterministic; SmolLM2 is slow
        memory_repeats = 1 if DEVICE.type == "cuda" or PRESET == "smollm2" else 3
    memory = {
        name: peak_mb(name, args.threads, memory_repeats) if memory_repeats > 0 else float("nan")
        for name in CONFIGS
    }
    base = statistics.median(times["none"])
    # paired: each step's time over the no-capture step on the same batch, a moment apart
    paired = {
        name: sorted(t / b for t, b in zip(times[name], times["none"], strict=True))
        for name in CONFIGS
    }
    length = PRESETS[PRESET][-1]
    what = f"{ROWS} x {length} tokens"
    if PRESET == "smollm2":
        what = (
            f"SmolLM2-135M-Instruct + LoRA r16 (all linear), {ROWS // ROWS_PER_GROUP} chat prompts "
            f"x {ROWS_PER_GROUP} completions of {length} tokens"
            + (", frozen weights measured too" if FROZEN else ", trainable weights measured")
        )
    print(
        f"\n{what}, {NUM_TASKS} tasks x 2 halves, median of {args.repeats} steps "
        f"({args.clock} clock), peak memory: "
        + (f"median of {memory_repeats} processes\n" if memory_repeats else "not measured\n")
    )
    kind = "CUDA max allocated" if DEVICE.type == "cuda" else "RSS"
    unit = "ms, CPU time" if args.clock == "process" else "ms"
    goal_column = PRESET == "smollm2"
    print(
        f"| configuration | median step ({unit}) | vs none | paired vs none (quartiles) "
        "| in capture code (ms) | none + in capture, vs none |"
        + (" goal |" if goal_column else "")
        + f" peak {kind} growth (MB) | vs none (MB) | share buffers (MB) |"
    )
    print(
        "| --- | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: |" if goal_column else "")
        + " ---: | ---: | ---: |"
    )
    for name in CONFIGS:
        median = statistics.median(times[name])
        extra = memory[name] - memory["none"]
        goal = f" {GOALS[name]} |" if name in GOALS else " |"
        peak = f"{memory[name]:.0f} | {extra:+.0f}" if memory_repeats > 0 else "not measured | -"
        quartiles = statistics.quantiles(paired[name], n=4) if len(paired[name]) > 1 else [1, 1, 1]
        inside = statistics.median(IN_CAPTURE[name]) if IN_CAPTURE.get(name) else 0.0
        direct = "n/a (asynchronous)" if DEVICE.type == "cuda" else f"{(base + inside) / base:.3f}x"
        print(
            f"| {name} | {1000 * median:.1f} | {median / base:.3f}x | "
            f"{statistics.median(paired[name]):.3f}x ({quartiles[0]:.3f}-{quartiles[2]:.3f}) | "
            f"{1000 * inside:.1f} | {direct} |"
            + (goal if goal_column else "")
            + f" {peak} | {share_buffer_mb(name):.1f} |"
        )
    print(f"\nWall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
