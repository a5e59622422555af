"""Policy models and tokenizers: Hugging Face causal LMs, or tiny ones built in code."""

from gradbal.models.lora import LoRA
from gradbal.models.policy import PolicySource, PretrainedPolicy, TinyPolicy, tiny_config
from gradbal.models.tokenizer import byte_level_tokenizer

__all__ = [
    "LoRA",
    "PolicySource",
    "PretrainedPolicy",
    "TinyPolicy",
    "byte_level_tokenizer",
    "tiny_config",
]
