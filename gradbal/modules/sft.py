"""SFTModule: multi-task supervised fine-tuning on (prompt, answer) pairs."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from typing_extensions import override

from gradbal.metric_names import LOSS, metric_name
from gradbal.models import PolicySource
from gradbal.modules._host_memory import release_host_memory
from gradbal.modules._policy_module import (
    PolicyModule,
    resolve_tasks,
    validation_generation_step,
)
from gradbal.modules._sequences import (
    PromptFormat,
    completion_logprobs,
    encode_completions,
    format_prompts,
    join,
    tokenize_prompts,
)
from gradbal.modules._task_metrics import (
    TaskAccuracy,
    log_task_means,
    log_train_loss,
)
from gradbal.nonfinite_loss import NonFiniteLoss, guard_loss
from gradbal.objectives import sft_loss
from gradbal.sharding import FSDP2Strategy, shard_for_trainer
from gradbal.task_losses import report_task_losses
from gradbal.types import TaskLosses


class SFTModule(PolicyModule):
    """Supervised fine-tuning on every task's ``answer`` column (the GRPO warm start).

    The loss is the token-mean negative log-likelihood of ``answer + eos`` given the prompt,
    over the whole batch (prompt tokens are not trained on). Validation decodes greedily and
    scores with each task's reward, exactly as :class:`GRPOModule` does, so the two report the
    same ``val/accuracy``.

    Every ``training_step`` sets ``self.task_losses`` (:class:`gradbal.types.TaskLosses`): each
    sample's share of the loss, its task id, and its own group id.

    Logged: ``train/loss``, ``train/loss/<task>`` (per-sample mean NLL per token); ``val/loss``,
    ``val/accuracy/<task>``, ``val/reward/<task>``, ``val/accuracy``.

    Assumptions:
        The DataModule exposes ``tasks`` and ``task_names`` and yields batches with
        ``task_id``, ``prompt`` and ``answer`` (docs/design.md).

    Args:
        policy: where the model and tokenizer come from.
        optimizer: optimizer factory (set ``lr`` explicitly).
        lr_scheduler: optional scheduler factory, stepped every optimiser step.
        max_prompt_length: keep only the last tokens of longer prompts.
        prompt_format: ``auto`` applies the tokenizer's chat template when it has one.
        val_max_new_tokens: completion limit at validation.
        task_names: filled from ``data.task_names`` by the CLI; checked against the DataModule.
        on_nonfinite_loss: a NaN or infinite loss stops training with a checkpoint of the last
            good state (``stop``) or skips that step with a warning (``skip``).
        sharding: how ``configure_model`` shards the policy with FSDP2
            when the Trainer's strategy is ``ModelParallelStrategy``; ``None``: the decoder
            layers, no mixed precision or offload (:class:`gradbal.sharding.FSDP2Strategy`).
            Ignored under other strategies.
    """

    def __init__(
        self,
        policy: PolicySource,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        max_prompt_length: int | None = None,
        prompt_format: PromptFormat = "auto",
        val_max_new_tokens: int = 64,
        task_names: list[str] | None = None,
        on_nonfinite_loss: NonFiniteLoss = "stop",
        sharding: FSDP2Strategy | None = None,
    ):
        super().__init__()
        if val_max_new_tokens < 1:
            raise ValueError(f"val_max_new_tokens must be >= 1, got {val_max_new_tokens}.")
        self.save_hyperparameters(ignore=["policy", "optimizer", "lr_scheduler", "sharding"])
        self.policy_source = policy
        self.sharding = sharding
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.max_prompt_length = max_prompt_length
        self.prompt_format: PromptFormat = prompt_format
        self.val_max_new_tokens = val_max_new_tokens
        self.task_names = task_names
        self.on_nonfinite_loss: NonFiniteLoss = on_nonfinite_loss
        self.model: torch.nn.Module | None = None
        self.task_losses: TaskLosses | None = None

    @override
    def configure_model(self) -> None:
        if self.model is None:
            self.model, self.tokenizer = self.policy_source.build()
            shard_for_trainer(self, self.model, self.sharding)

    @override
    def setup(self, stage: str) -> None:
        self.configure_model()
        self.tasks, self.task_names = resolve_tasks(self, self.task_names)
        self.val_metric = TaskAccuracy(self.task_names).to(self.device)

    def _nll(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        assert self.model is not None
        prompts = format_prompts(self.tokenizer, batch["prompt"], self.prompt_format)
        ids, mask = tokenize_prompts(self.tokenizer, prompts, self.max_prompt_length, self.device)
        answer_ids, answer_mask = encode_completions(self.tokenizer, batch["answer"], self.device)
        seqs = join(ids, mask, answer_ids, answer_mask)
        out = sft_loss(completion_logprobs(self.model, seqs), seqs.completion_mask)
        return out.losses, out.token_nll_mean

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        assert self.task_names is not None
        shares, nll = self._nll(batch)  # [N], [N]
        task_ids = batch["task_id"].to(self.device)
        loss = report_task_losses(self, shares, task_ids)  # task loss weights applied
        log_task_means(self, "train", {LOSS: nll}, task_ids, self.task_names, overall=False)
        log_train_loss(self, loss)
        return guard_loss(self, loss, self.on_nonfinite_loss)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        release_host_memory(self.device)  # CPU: freed activations back to the OS (see module)

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        assert self.model is not None
        shares, _ = self._nll(batch)
        self.log(
            metric_name("val", LOSS),
            shares.sum(),
            on_step=False,
            on_epoch=True,
            batch_size=len(shares),
            sync_dist=True,
        )
        validation_generation_step(
            self,
            self.model,
            self.tokenizer,
            self.tasks,
            self.val_metric,
            batch,
            max_new_tokens=self.val_max_new_tokens,
            prompt_format=self.prompt_format,
            max_prompt_length=self.max_prompt_length,
        )

    @override
    def on_validation_epoch_end(self) -> None:
        self.val_metric.log_and_reset(self, "val")

    @override
    def on_test_epoch_end(self) -> None:
        self.val_metric.log_and_reset(self, "test")
