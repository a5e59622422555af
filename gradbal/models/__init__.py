"""Policy models and tokenizers: Hugging Face causal LMs, or tiny ones built in code."""

from gradbal.models.gguf import convert_gguf, default_cache_dir
from gradbal.models.lora import LoRA
from gradbal.models.policy import PolicySource, PretrainedPolicy, TinyPolicy, tiny_config
from gradbal.models.shipped import SHIPPED_MODELS, shipped_model_path, smollm2_path
from gradbal.models.tokenizer import byte_level_tokenizer

__all__ = [
    "SHIPPED_MODELS",
    "LoRA",
    "PolicySource",
    "PretrainedPolicy",
    "TinyPolicy",
    "byte_level_tokenizer",
    "convert_gguf",
    "default_cache_dir",
    "shipped_model_path",
    "smollm2_path",
    "tiny_config",
]
