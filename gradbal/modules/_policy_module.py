"""Wiring shared by the policy-training modules: tasks from the DataModule, generation-based
validation, optimizers, checkpoint weights, and export to a Hugging Face directory; and
:class:`PolicyModule`, the base that gives GRPO, DPO and SFT the same checkpoint, optimiser,
test and export hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from transformers import PreTrainedTokenizerBase

from gradbal.contracts import trainer_of
from gradbal.modules._frozen_state import (
    drop_frozen_weights,
    keeps_frozen_weights,
    restore_frozen_weights,
)
from gradbal.modules._generation import decode, generate, score_by_task
from gradbal.modules._sequences import (
    PromptFormat,
    completion_mask,
    format_prompts,
    tokenize_prompts,
)
from gradbal.modules._task_metrics import TaskAccuracy
from gradbal.nonfinite_loss import nonfinite_logits_error
from gradbal.tasks import OnRewardError, Task


def resolve_tasks(
    module: LightningModule, task_names: list[str] | None
) -> tuple[list[Task], list[str]]:
    """The DataModule's tasks, checked against the module's ``task_names`` if it was given one."""
    trainer = trainer_of(module)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    tasks = getattr(dm, "tasks", None)
    names = getattr(dm, "task_names", None)
    if dm is None or tasks is None or names is None:
        raise RuntimeError(
            f"{type(module).__name__} needs a DataModule with `tasks` and `task_names` (for the "
            f"reward functions and per-task metrics), got {type(dm).__name__}. Use "
            "gradbal.datamodules.MultiTaskDataModule, or give your DataModule those attributes."
        )
    if not tasks:
        dm.setup("fit")
        tasks = dm.tasks
    if task_names is not None and list(task_names) != list(names):
        raise ValueError(
            f"The module was configured for tasks {task_names} but the DataModule has {names}. "
            "Declare tasks once under `data:` (the CLI links them into the model) or make both "
            "lists equal."
        )
    return list(tasks), list(names)


def validation_generation_step(
    module: LightningModule,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[Task],
    metric: TaskAccuracy,
    batch: dict[str, Any],
    *,
    max_new_tokens: int,
    prompt_format: PromptFormat,
    max_prompt_length: int | None,
    on_reward_error: OnRewardError = "raise",
    warned: set[str] | None = None,
) -> None:
    """Greedy completions for a validation batch, scored by each task's reward."""
    prompts = format_prompts(tokenizer, batch["prompt"], prompt_format)
    ids, mask = tokenize_prompts(tokenizer, prompts, max_prompt_length, module.device)
    completion_ids = generate(
        model,
        tokenizer,
        ids,
        mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        nonfinite_error=lambda: nonfinite_logits_error(module, "generating validation completions"),
    )
    cmask, _ = completion_mask(completion_ids, tokenizer.eos_token_id)
    completions = decode(tokenizer, completion_ids, cmask)
    task_ids = batch["task_id"]
    scores = score_by_task(
        tasks,
        task_ids.tolist(),
        batch["prompt"],
        completions,
        batch["answer"],
        batch["columns"],
        on_reward_error,
        warned,
    )
    metric.update(task_ids.cpu(), scores.correct, scores.rewards)


def configure_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
) -> Any:
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise RuntimeError("The policy has no trainable parameters; check the LoRA/freeze setup.")
    opt = optimizer(trainable)
    if lr_scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": "step"}}


def save_checkpoint_weights(
    module: LightningModule, policy: object, checkpoint: dict[str, Any]
) -> None:
    """``on_save_checkpoint``: leave out the frozen weights unless ``policy`` keeps them.

    See :mod:`gradbal.modules._frozen_state`; full fine-tuning checkpoints are unchanged.
    """
    if not keeps_frozen_weights(policy):
        drop_frozen_weights(module, checkpoint)


def load_checkpoint_weights(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """``on_load_checkpoint``: put back (after checking) frozen weights a checkpoint left out."""
    restore_frozen_weights(module, checkpoint)


def save_pretrained(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> Path:
    """Write ``model`` (LoRA adapters merged into the base) and ``tokenizer`` to ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    to_save: Any = model
    merge: Callable[[], Any] | None = getattr(model, "merge_and_unload", None)
    if merge is not None:
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    to_save.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class PolicyModule(LightningModule):
    """The hooks GRPO, DPO and SFT share, once (a subclass sets the attributes below).

    ``on_save_checkpoint`` leaves the frozen weights out unless the policy keeps them (and
    ``on_load_checkpoint`` puts them back, checked); ``configure_optimizers`` builds the
    optimiser (and step-wise scheduler) over the trainable parameters; ``test_step`` is
    ``validation_step``; :meth:`save_pretrained` exports the policy (LoRA merged) and tokenizer.

    Attributes a subclass sets in ``__init__``: ``policy_source`` (a policy source with
    ``build()``), ``optimizer_factory``, ``lr_scheduler_factory``, ``model`` (``None`` until
    ``configure_model``) and, after it, ``tokenizer``.
    """

    policy_source: Any
    optimizer_factory: OptimizerCallable
    lr_scheduler_factory: LRSchedulerCallable | None
    model: torch.nn.Module | None
    tokenizer: PreTrainedTokenizerBase

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_checkpoint_weights(self, self.policy_source, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_checkpoint_weights(self, checkpoint)

    def configure_optimizers(self) -> Any:
        assert self.model is not None
        return configure_optimizers(
            self.model.parameters(), self.optimizer_factory, self.lr_scheduler_factory
        )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the policy (LoRA merged) and tokenizer as a Hugging Face directory."""
        assert self.model is not None
        return save_pretrained(self.model, self.tokenizer, path)
