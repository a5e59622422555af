"""The policy modules' generation and prompt-tokenisation steps, public for code outside them.

:mod:`gradbal.evaluation` decodes and scores a saved policy exactly as GRPO's validation does;
it imports these names from here rather than from the modules' private helpers.
"""

from gradbal.modules._generation import TaskScores, decode, generate, score_by_task, step_rng
from gradbal.modules._sequences import (
    PromptFormat,
    completion_mask,
    format_prompts,
    tokenize_prompts,
)

__all__ = [
    "PromptFormat",
    "TaskScores",
    "completion_mask",
    "decode",
    "format_prompts",
    "generate",
    "score_by_task",
    "step_rng",
    "tokenize_prompts",
]
