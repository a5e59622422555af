"""LoRA adapters as a small typed config that YAML can build (wraps ``peft.LoraConfig``)."""

from __future__ import annotations

from typing import Literal

import torch
from peft import LoraConfig, get_peft_model


class LoRA:
    """Low-rank adapters on a causal LM; only the adapters train.

    Args:
        r: adapter rank.
        alpha: scaling numerator (``alpha / r`` multiplies the adapter output).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``"all-linear"``.
        bias: which biases train.

    Example::

        >>> from gradbal.models import TinyPolicy
        >>> model, _ = TinyPolicy(hidden_size=32, num_layers=1, lora=LoRA(r=4)).build()
        >>> trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        >>> type(model).__name__, trainable > 0
        ('PeftModelForCausalLM', True)
    """

    def __init__(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        target_modules: list[str] | str = "all-linear",
        bias: Literal["none", "all", "lora_only"] = "none",
    ):
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}.")
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules
        self.bias = bias

    def __repr__(self) -> str:
        return f"LoRA(r={self.r}, alpha={self.alpha}, target_modules={self.target_modules!r})"

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        config = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
