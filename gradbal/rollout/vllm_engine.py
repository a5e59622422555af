"""``VLLMEngine``: rollouts from a colocated, in-process vLLM, synced from the trainer's weights."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from gradbal.rollout.batch import FinishReason, RolloutBatch
from gradbal.rollout.engine import RolloutEngine
from gradbal.rollout.sampling import SamplingSettings

#: How LoRA weights reach vLLM: ``merge`` streams base + adapter delta as plain weights (TRL's
#: way; vLLM runs a plain model), ``adapter`` saves only the adapter and serves it as a
#: ``LoRARequest`` (less to copy, slower generation).
LoRASync = Literal["merge", "adapter"]
VLLMDType = Literal["auto", "float32", "bfloat16", "float16"]


class VLLMEngine(RolloutEngine):
    """Sample with vLLM in the trainer's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).

    :meth:`attach` writes the policy (base weights, config, tokenizer) to a temporary folder
    and starts ``vllm.LLM`` on it; :meth:`sync_weights` streams the trainer's parameters into
    it with vLLM's ``reload_weights(weights_iterator=...)`` (no disk) and resets its prefix
    cache; :meth:`generate` asks for ``n = num_completions`` per prompt with the sampled
    token's ``processed_logprobs`` (after temperature, top-k, top-p: what
    :class:`~gradbal.rollout.RolloutBatch` defines). vLLM needs the ``vllm`` package, which lives
    in its own environment (``make setup-vllm``; docs/rollout.md "VLLMEngine").

    ``needs_importance_sampling``: GRPO's ``importance_sampling: auto`` applies TRL's truncated
    importance-sampling correction with this engine.

    Args:
        lora_sync: with a LoRA (peft) policy, ``merge`` (default) streams each adapted weight
            as ``base + delta`` computed from the adapter (the trainer's model is not modified),
            under the base model's names; ``adapter`` saves the adapter files at each sync and
            generates with a ``LoRARequest`` (vLLM's LoRA kernels; the base is loaded once).
        gpu_memory_utilization: fraction of the accelerator's memory vLLM may take (weights,
            activations, KV cache), TRL's ``vllm_gpu_memory_utilization`` (default 0.3, leaving
            the rest to training). Ignored by the CPU build, which sizes the KV cache from
            ``kv_cache_memory_bytes``.
        kv_cache_memory_bytes: the KV cache's size in bytes (``None``: vLLM's default, on CPU
            ``VLLM_CPU_KVCACHE_SPACE`` or 4 GiB). Small on CPU: a few MiB hold a tiny model's
            rollouts.
        sleep_mode: free vLLM's memory between rollouts (``LLM(enable_sleep_mode=True)``;
            ``sleep(level=1)`` after each generate, and before a sync wake the weights, load
            them, then wake the KV cache, TRL's order). vLLM's CPU build ignores it.
        seed: vLLM's engine seed. Each :meth:`generate` call also gets its own seed (GRPO's
            per-step, per-rank seed), so the same weights and seed draw the same tokens.
        dtype: the dtype vLLM computes in; ``auto`` is the policy's.
        max_model_len: longest prompt + completion (``None`` or more than the model's maximum
            positions: the model's maximum positions); bounds the KV cache vLLM must hold.
        enforce_eager: no graph capture or compilation (faster start; on a GPU ``False`` may
            generate faster).
        max_lora_rank: with ``lora_sync="adapter"``, the largest rank vLLM reserves (``None``:
            the policy's rank).
        engine_kwargs: further keyword arguments for ``vllm.LLM`` (they win over the engine's
            own). On the CPU the engine turns chunked prefill off (``enable_chunked_prefill:
            false``, ``max_num_batched_tokens`` at least the longest sequence): seeded requests
            cannot be resumed after a partial prefill there.

    Example (needs vLLM)::

        model:
          class_path: gradbal.modules.GRPOModule
          init_args:
            rollout_engine:
              class_path: gradbal.rollout.VLLMEngine
              init_args: {kv_cache_memory_bytes: 268435456, seed: 0}
    """

    needs_weight_sync = True
    needs_importance_sampling = True
    #: Engines started and not closed in this process (0 or 1): vLLM keeps its parallel
    #: state in process globals, so only one engine may run at a time (error V06).
    _running: ClassVar[int] = 0

    def __init__(
        self,
        lora_sync: LoRASync = "merge",
        gpu_memory_utilization: float = 0.3,
        kv_cache_memory_bytes: int | None = None,
        sleep_mode: bool = False,
        seed: int = 0,
        dtype: VLLMDType = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        max_lora_rank: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if lora_sync not in ("merge", "adapter"):
            raise ValueError(
                f"V04: lora_sync must be 'merge' or 'adapter', got {lora_sync!r}. 'merge' streams "
                "base + adapter delta as plain weights (the default); 'adapter' serves the "
                "adapter with vLLM's LoRA kernels."
            )
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"V04: gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}. "
                "It is the fraction of the accelerator's memory vLLM may take; TRL's default "
                "for an engine beside training is 0.3."
            )
        if kv_cache_memory_bytes is not None and kv_cache_memory_bytes < 1:
            raise ValueError(
                f"V04: kv_cache_memory_bytes must be >= 1 or null, got {kv_cache_memory_bytes}."
            )
        self.lora_sync: LoRASync = lora_sync
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_memory_bytes = kv_cache_memory_bytes
        self.sleep_mode = sleep_mode
        self.seed = seed
        self.dtype: VLLMDType = dtype
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.max_lora_rank = max_lora_rank
        self.engine_kwargs = dict(engine_kwargs or {})
        self._model: torch.nn.Module | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._llm: Any = None
        self._folder: Path | None = None
        self._lora_request: Any = None
        #: Seconds spent in each :meth:`sync_weights` (for benchmarks; not saved).
        self.sync_seconds: list[float] = []

    # ---- life cycle ------------------------------------------------------------------------

    def attach(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
        if self._llm is not None and model is self._model and tokenizer is self._tokenizer:
            return
        self.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                raise NotImplementedError(
                    "V05: VLLMEngine runs in one process; this run has "
                    f"{torch.distributed.get_world_size()} ranks. Several ranks each with a "
                    "colocated vLLM (TRL's external_launcher) are not implemented or tested "
                    "yet: use HFGenerate for multi-process runs."
                )
        if VLLMEngine._running > 0:
            raise RuntimeError(
                f"V06: another VLLMEngine is running in this process ({VLLMEngine._running}); "
                "vLLM keeps its parallel state in process globals, so a second engine breaks "
                "the first. Close the other one first (engine.close(); GRPOModule closes its "
                "engine at the end of fit), or reuse it: attach() moves it to another model."
            )
        is_peft = _is_peft(model)
        if self.lora_sync == "adapter" and not is_peft:
            raise ValueError(
                f"V04: lora_sync='adapter' serves a LoRA adapter, but the policy "
                f"{type(model).__name__} has none. Use lora_sync: merge (any policy), or give "
                "the policy a `lora:` section."
            )
        from gradbal.rollout.vllm_env import import_vllm  # not at import: `-m vllm_env` runs it

        vllm = import_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self._folder = Path(tempfile.mkdtemp(prefix="gradbal-vllm-"))
        base_dtype = _write_checkpoint(
            model, tokenizer, self._folder, merge=not self.lora_sync == "adapter"
        )
        kwargs: dict[str, Any] = {
            "dtype": _dtype_name(base_dtype) if self.dtype == "auto" else self.dtype,
            "seed": self.seed,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "logprobs_mode": "processed_logprobs",
            "generation_config": "vllm",  # sampling comes from SamplingSettings only
            "enable_prefix_caching": True,
            "enable_sleep_mode": self.sleep_mode,
        }
        if self.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = self.kv_cache_memory_bytes
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if self.max_model_len is not None:  # at most the model's own positions
            kwargs["max_model_len"] = min(self.max_model_len, positions or self.max_model_len)
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # Every generate is seeded, and after a partial (chunked) prefill vLLM rewinds each
            # seeded request's generator, which the CPU generator cannot do ("CPU Generator does
            # not use offset", once a rollout's prompts exceed one scheduler step): keep prompts
            # whole, as vLLM's CPU platform itself does for MLA models.
            longest = kwargs.get("max_model_len") or positions or 0
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(2048, int(longest))
        if self.lora_sync == "adapter" and is_peft:
            kwargs["enable_lora"] = True
            kwargs["max_lora_rank"] = self.max_lora_rank or _lora_rank(model)
        kwargs.update(self.engine_kwargs)
        self._llm = vllm.LLM(model=str(self._folder), **kwargs)
        VLLMEngine._running += 1
        self._model, self._tokenizer = model, tokenizer
        self._weight_version = -1

    def close(self) -> None:
        """Stop vLLM and delete its temporary folder (another :meth:`attach` may follow)."""
        if self._llm is not None:
            llm, self._llm = self._llm, None
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
            del llm, engine, shutdown
            VLLMEngine._running -= 1
            _release_vllm()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._model = self._tokenizer = None
        self._lora_request = None

    # ---- weights ---------------------------------------------------------------------------

    def sync_weights(self, named_parameters: Iterable[tuple[str, Tensor]], version: int) -> None:
        """Load the trainer's weights into vLLM (all of them, or the LoRA adapter) as ``version``.

        Every rank must call it (gathering sharded parameters is collective); DTensors are
        gathered with ``full_tensor()``.
        """
        import time

        llm, model = self._require()
        start = time.perf_counter()
        if self.sleep_mode:
            llm.wake_up(tags=["weights"])
        if self.lora_sync == "adapter":
            self._save_adapter(model, version)
        else:
            weights = (
                _merged(model, named_parameters) if _is_peft(model) else _plain(named_parameters)
            )
            llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
            )
        llm.reset_prefix_cache()  # cached prompt KV came from the old weights
        if self.sleep_mode:
            llm.wake_up(tags=["kv_cache"])
        self.sync_seconds.append(time.perf_counter() - start)
        super().sync_weights((), version)

    def _save_adapter(self, model: torch.nn.Module, version: int) -> None:
        from vllm.lora.request import LoRARequest

        assert self._folder is not None
        folder = self._folder / f"adapter-{version}"
        model.save_pretrained(str(folder))  # type: ignore[operator]  # peft: the adapter only
        previous = self._lora_request
        self._lora_request = LoRARequest("gradbal", 1, str(folder), load_inplace=True)
        if previous is not None and Path(previous.lora_path) != folder:
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    # ---- generation ------------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        *,
        num_completions: int,
        sampling: SamplingSettings,
        seed: int | None = None,
        nonfinite_error: Callable[[], Exception] | None = None,
    ) -> RolloutBatch:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm, _ = self._require()
        tokenizer = self._tokenizer
        assert tokenizer is not None
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        if seed is None:  # the global torch RNG picks it, so seed_everything still governs
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        params = SamplingParams(
            n=num_completions,
            max_tokens=sampling.max_new_tokens,
            min_tokens=sampling.min_new_tokens,
            temperature=sampling.temperature if sampling.do_sample else 0.0,
            top_p=sampling.top_p if sampling.do_sample else 1.0,
            top_k=(sampling.top_k or -1) if sampling.do_sample else -1,
            seed=seed,
            logprobs=0,  # the sampled token's own log-prob
            stop_token_ids=[eos] if eos is not None else None,
        )
        prompts = [
            TokensPrompt(prompt_token_ids=row[keep.bool()].tolist())
            for row, keep in zip(prompt_ids.cpu(), prompt_mask.cpu(), strict=True)
        ]
        outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora_request)
        if self.sleep_mode:
            llm.sleep(level=1)
        rows: list[list[int]] = []
        logprobs: list[list[float]] = []
        reasons: list[FinishReason] = []
        for request in outputs:
            for completion in sorted(request.outputs, key=lambda c: c.index):
                ids = list(completion.token_ids)
                rows.append(ids)
                logprobs.append(_sampled_logprobs(ids, completion.logprobs))
                reasons.append("stop" if eos is not None and eos in ids else "length")
        return _pad_batch(
            rows, logprobs, tuple(reasons), pad, self.weight_version, prompt_ids.device
        )

    def _require(self) -> tuple[Any, torch.nn.Module]:
        if self._llm is None or self._model is None:
            raise RuntimeError(
                "VLLMEngine was used before attach(model, tokenizer): vLLM is started there, "
                "from the policy's weights. Call engine.attach(policy, tokenizer) first "
                "(GRPOModule does this itself)."
            )
        return self._llm, self._model


# ---- helpers ---------------------------------------------------------------------------------


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


#: The ranks vLLM 0.32 reserves LoRA slots for.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _lora_rank(model: torch.nn.Module) -> int:
    """The policy's largest LoRA rank, rounded up to a rank vLLM accepts."""
    configs = getattr(model, "peft_config", {})
    rank = max(int(getattr(c, "r", 8)) for c in configs.values()) if configs else 8
    return next((r for r in _VLLM_LORA_RANKS if r >= rank), rank)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def clean_name(name: str) -> str:
    """A PEFT parameter name as the base model's checkpoint spells it.

    Example::

        >>> clean_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
        'model.layers.0.self_attn.q_proj.weight'
    """
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _full(tensor: Tensor) -> Tensor:
    full = getattr(tensor, "full_tensor", None)  # DTensor (FSDP2): gather, on every rank
    return (full() if callable(full) else tensor).detach()


def _plain(named_parameters: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
    for name, tensor in named_parameters:
        yield name, _full(tensor)


def _merged(
    model: torch.nn.Module, named_parameters: Iterable[tuple[str, Tensor]]
) -> Iterator[tuple[str, Tensor]]:
    """Base weights with each LoRA layer's delta added (``W + scale * B A``), under base names.

    The deltas come from peft's ``get_delta_weight`` of the active adapters; the trainer's
    model is not merged and unmerged in place (which would round the frozen base each time).
    """
    from peft.tuners.lora import LoraLayer

    layers: dict[str, Any] = {}  # "<module>.base_layer.weight" -> its LoRA layer
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            layers[f"{name}.base_layer.weight"] = module
    for name, tensor in named_parameters:
        if "lora_" in name:
            continue
        value = _full(tensor)
        layer: Any = layers.get(name)
        active = [a for a in layer.active_adapters if a in layer.lora_A] if layer else []
        for adapter in active:  # one delta at a time: no second copy of every weight
            value = value + layer.get_delta_weight(adapter).to(value.dtype)
        yield clean_name(name), value


def _write_checkpoint(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path, *, merge: bool
) -> torch.dtype:
    """Write a Hugging Face checkpoint vLLM can start from; returns the weights' dtype.

    ``merge``: LoRA deltas folded in (as :func:`_merged`); otherwise the bare base weights.
    """
    from safetensors.torch import save_file

    base = model.get_base_model() if _is_peft(model) else model  # type: ignore[operator]
    named = model.named_parameters()
    weights = (
        _merged(model, named)
        if merge and _is_peft(model)
        else ((clean_name(n), _full(t)) for n, t in named if "lora_" not in n)
    )
    state = {name: t.to("cpu").contiguous().clone() for name, t in weights}
    dtype = next(iter(state.values())).dtype
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    base.config.save_pretrained(str(folder))  # type: ignore[union-attr,operator]
    tokenizer.save_pretrained(str(folder))
    return dtype


def _sampled_logprobs(ids: list[int], logprobs: Any) -> list[float]:
    """The log-prob vLLM reports for each sampled token (``logprobs=0``: only that one)."""
    if logprobs is None:
        return [0.0] * len(ids)
    return [float(step[token].logprob) for token, step in zip(ids, logprobs, strict=True)]


def _pad_batch(
    rows: list[list[int]],
    logprobs: list[list[float]],
    reasons: tuple[FinishReason, ...],
    pad: int | None,
    version: int,
    device: torch.device,
) -> RolloutBatch:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    lps = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (row, lp) in enumerate(zip(rows, logprobs, strict=True)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        lps[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return RolloutBatch(ids.to(device), lps.to(device), reasons, version)


def _release_vllm() -> None:
    """Free vLLM's process-wide state so that another engine can start in this process."""
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except Exception:  # best effort: a failed cleanup must not hide the run's error
        pass
    gc.collect()
