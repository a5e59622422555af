"""Two gloo ranks that shard a tiny Llama (FSDP2 or FSDP1), capture per-segment gradients and
compute brute-force references on an unsharded copy; results go to ``<out>/<case>_rank<r>.pt``.

Run by ``test_sharded_capture.py`` as ``python -m tests.integration._sharded_child OUT`` (in a
subprocess with a timeout, so a crashed rank cannot hang pytest).
"""

from __future__ import annotations

import copy
import os
import sys
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from gradbal.gradstats import TaskGradCapture, half_split_segments, task_grad_stats

NUM_TASKS, ROWS, TOKENS, VOCAB = 2, 8, 6, 64
# case: (wrapper, selection, micro-batches, param dtype)
CASES: dict[str, tuple[str, str, int, torch.dtype | None]] = {
    "fsdp2": ("fsdp2", "last_attention_block", 1, None),
    "fsdp2_accumulation": ("fsdp2", "all_linear", 2, None),
    "fsdp2_bf16": ("fsdp2", "last_attention_block", 1, torch.bfloat16),
    # CPUOffloadPolicy, and an embedding among the measured layers
    "fsdp2_offload_embedding": ("fsdp2_offload", r"embed_tokens|self_attn\.q_proj", 2, None),
    "fsdp1": ("fsdp1", "last_attention_block", 1, None),
    "fsdp1_all_linear": ("fsdp1", "all_linear", 2, None),
}


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def row_losses(model: nn.Module, ids: Tensor) -> Tensor:
    """``[N]``: each row's mean next-token cross-entropy (a row's loss depends on its row only)."""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [N, T-1, V]
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="none"
    )
    return ce.view(ids.shape[0], -1).mean(1)  # [N]


def shard(model: nn.Module, wrapper: str, dtype: torch.dtype | None) -> nn.Module:
    if wrapper.startswith("fsdp2"):
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if wrapper == "fsdp2_offload":
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=False)
        if dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=dtype, reduce_dtype=torch.float32
            )
        for layer in model.model.layers:  # type: ignore[union-attr]
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return FullyShardedDataParallel(
        model,
        device_id=torch.device("cpu"),
        use_orig_params=True,
        auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}),
    )


def all_reduce(t: Tensor) -> Tensor:
    out = t.clone()
    dist.all_reduce(out)
    return out


def run_case(rank: int, case: str, out_dir: str) -> None:
    wrapper, selection, micro, dtype = CASES[case]
    model = tiny_llama()
    reference = copy.deepcopy(model)
    if dtype is not None:
        reference = reference.to(dtype)
    sharded = shard(model, wrapper, dtype)
    capture = TaskGradCapture(sharded, selection)
    # the same layers in the unsharded copy, by their unwrapped names
    names = capture.measured_params
    ref_params = dict(reference.named_parameters())
    plain = {n: ref_params[n.replace("_fsdp_wrapped_module.", "")] for n in names}
    generator = torch.Generator().manual_seed(1000 + rank)
    shares_ref = {
        n: torch.zeros(2 * NUM_TASKS, *p.shape, dtype=torch.float64) for n, p in plain.items()
    }
    with capture:
        for k in range(micro):
            ids = torch.randint(0, VOCAB, (ROWS, TOKENS), generator=generator)
            task_ids = torch.arange(ROWS) % NUM_TASKS
            group_ids = torch.arange(ROWS)
            split = torch.Generator().manual_seed(7 * k + rank)
            segments = half_split_segments(task_ids, group_ids, NUM_TASKS, generator=split)
            capture.set_segments(segments, 2 * NUM_TASKS, group_ids)
            losses = row_losses(sharded, ids)
            losses.sum().backward()
            ref_losses = row_losses(reference, ids)
            for s in range(2 * NUM_TASKS):
                rows = segments == s
                if not rows.any():
                    continue
                grads = torch.autograd.grad(
                    ref_losses[rows].sum(), list(plain.values()), retain_graph=True
                )
                for n, g in zip(plain, grads, strict=True):
                    shares_ref[n][s] += g.double()
    groups = capture.groups_per_segment()
    stats = task_grad_stats(capture.gram(), groups, num_tasks=NUM_TASKS, all_reduce=all_reduce)
    flat = torch.cat([g.flatten(1) for g in shares_ref.values()], 1)  # [S, P]
    stats_ref = task_grad_stats(flat @ flat.T, groups, num_tasks=NUM_TASKS, all_reduce=all_reduce)
    # FSDP's reduced (averaged over ranks) gradient of the measured weights, unsharded
    reduced = {}
    if wrapper.startswith("fsdp2") and dtype is None:
        named = dict(sharded.named_parameters())
        reduced = {n: named[n].grad.full_tensor() for n in names}  # type: ignore[union-attr]
    torch.save(
        {
            "shares": {n: s.detach().double() for n, s in capture.segment_grads().items()},
            "shares_ref": shares_ref,
            "unbiased_sq": stats.unbiased_sq,
            "unbiased_sq_ref": stats_ref.unbiased_sq,
            "valid": stats.valid,
            "captured": capture.captured_layers,
            "skipped": dict(capture.skipped),
            "reduced": reduced,
        },
        os.path.join(out_dir, f"{case}_rank{rank}.pt"),
    )


def worker(rank: int, out_dir: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for case in CASES:
            run_case(rank, case, out_dir)
    finally:
        dist.destroy_process_group()


def main() -> None:
    out_dir, port = sys.argv[1], int(sys.argv[2])
    mp.spawn(partial(worker), args=(out_dir, port), nprocs=2, join=True)


if __name__ == "__main__":
    main()
