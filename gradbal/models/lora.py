"""LoRA adapters as a small typed config that YAML can build (wraps ``peft.LoraConfig``)."""

from __future__ import annotations

import re
from typing import Literal

import torch
from peft import LoraConfig, get_peft_model
from transformers.pytorch_utils import Conv1D


class LoRA:
    """Low-rank adapters on a causal LM; only the adapters train.

    Args:
        r: adapter rank.
        alpha: scaling numerator (``alpha / r`` multiplies the adapter output).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``"all-linear"``.
        bias: which biases train.

    Raises:
        ValueError: On ``r < 1`` or ``dropout`` outside ``[0, 1)``; in :meth:`apply`, if a name
            in ``target_modules`` matches no module of the model (peft would silently skip it
            when another name matches); the message lists the model's linear layer names.

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
        self._check_targets(model)
        config = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)

    def _check_targets(self, model: torch.nn.Module) -> None:
        """Raise unless every target name matches a module, with peft's matching rules."""
        if self.target_modules == "all-linear":
            return
        names = [name for name, _ in model.named_modules() if name]
        if isinstance(self.target_modules, str):  # peft: a regex over the full module name
            try:
                pattern = re.compile(self.target_modules)
            except re.error as err:
                raise ValueError(
                    f"LoRA target_modules={self.target_modules!r} is not a valid regular "
                    f"expression ({err}). Pass a list of module names instead, e.g. ['q_proj']."
                ) from err
            found = any(pattern.fullmatch(name) for name in names)
            missing = [] if found else [self.target_modules]
        else:  # peft: a module matches a name when it is that name or ends in ".<name>"
            missing = [
                t
                for t in self.target_modules
                if not any(n == t or n.endswith(f".{t}") for n in names)
            ]
        if missing:
            linear = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in model.named_modules()
                    if isinstance(m, (torch.nn.Linear, Conv1D))
                }
            )
            raise ValueError(
                f"LoRA target_modules {missing} match no module of {type(model).__name__} (got "
                f"target_modules={self.target_modules!r}). Its linear layers are named {linear}. "
                "Pick names from that list, or use target_modules='all-linear'."
            )
