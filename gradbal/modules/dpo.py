"""DPOModule: multi-task preference optimisation (DPO and its variants) on preference tasks."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from typing_extensions import override

from gradbal.contracts import PreferenceReport, trainer_of
from gradbal.metric_names import LOSS, REWARDS_ACCURACIES, metric_name
from gradbal.models import PolicySource
from gradbal.modules._host_memory import release_host_memory
from gradbal.modules._policy_module import (
    PolicyModule,
    resolve_tasks,
    validation_generation_step,
)
from gradbal.modules._preference_data import pair_sequences, sequence_logps
from gradbal.modules._preference_metrics import (
    PAIR_GROUPS,
    TaskMeans,
    check_diagnostics,
    pair_metrics,
)
from gradbal.modules._reference_logps import (
    ReferenceTable,
    model_fingerprint,
    precompute_reference,
)
from gradbal.modules._sequences import PromptFormat, Sequences
from gradbal.modules._task_metrics import (
    TaskAccuracy,
    log_task_means,
    log_train_loss,
)
from gradbal.modules.reference import InitialPolicy, Precomputed, Reference
from gradbal.nonfinite_loss import NonFiniteLoss, guard_loss
from gradbal.objectives import DPO, PreferenceLogps, PreferenceObjective
from gradbal.sharding import FSDP2Strategy, is_sharded, shard_for_trainer
from gradbal.task_losses import report_task_losses
from gradbal.tasks import check_preference_task
from gradbal.types import TaskLosses

ReferenceName = Literal["model", "precomputed"]


class DPOModule(PolicyModule):
    """Direct preference optimisation over many preference tasks, with any preference objective.

    Each step scores every pair's chosen and rejected completion under the policy in *one*
    forward (rows ``:B`` chosen, ``B:`` rejected), gets the reference log-probs, and minimises
    the batch mean of ``objective`` (a :class:`~gradbal.objectives.PreferenceObjective` chosen in
    YAML: ``DPO``, ``RobustDPO``, ``IPO``, ``Hinge``, ``BalancedDPO``, ``BPO``, ``WithChosenNLL``).

    Reference (``reference``, :mod:`gradbal.modules.reference`, shared with GRPO):
    ``InitialPolicy()`` (``"model"``) is a frozen copy of the initial policy, or under LoRA the
    adapter-disabled base (no copy); ``FrozenCopy()`` and ``AdapterDisabled()`` force one of
    the two; ``Precomputed()`` (``"precomputed"``) scores every pair of every task once at setup
    with the initial policy (``Dataset.map``; Arrow-cached in its ``cache_dir`` when given,
    keyed by data, weights and settings) and keeps only the numbers. Rows that
    already carry ``ref_chosen_logps`` / ``ref_rejected_logps`` columns are used as they are.

    Every ``training_step`` sets ``self.task_losses`` (:class:`gradbal.types.TaskLosses`) with
    one entry per forward row: the chosen and the rejected row of a pair each carry half the
    pair's share of the loss, share its task and form one group. Its ``parts`` (``[2B]``, 1 on
    the rejected completions' rows) is what ``PreferenceGradientMonitor`` splits by.
    ``self.last_preferences`` (:class:`gradbal.contracts.PreferenceReport`) carries each pair's
    implicit rewards for the statistic sources (``RewardMarginMonitor``...).

    Logged (overall and per task ``/<task>``): ``train/rewards/{chosen,rejected,margins,
    accuracies}``, ``train/logps/{chosen,rejected}`` (summed over tokens), the objective's
    diagnostics (e.g. ``train/balance_weight/chosen``); ``train/loss`` and
    ``train/loss/<task>`` (the mixture, ``train/sampling_prob/<task>``, is logged by
    ``TaskSamplingScheduler``). Validation: the same groups under ``val/`` plus ``val/loss``
    (per-task means; overall = unweighted mean over tasks), and with ``val_generate`` greedy
    ``val/accuracy/<task>``, ``val/reward/<task>``, ``val/accuracy``.

    Assumptions:
        Every task is a preference task (``chosen``, ``rejected`` columns; see
        ``gradbal.tasks.preference``). Automatic optimisation, one optimiser step per batch.

    Args:
        policy: where the model and tokenizer come from.
        objective: the preference loss (default ``DPO(beta=0.1)``).
        optimizer: optimizer factory (set ``lr``; ~5e-7 for billion-parameter models).
        lr_scheduler: optional scheduler factory, stepped every optimiser step.
        reference: a :class:`~gradbal.modules.reference.Reference` (``InitialPolicy()``,
            ``FrozenCopy()``, ``AdapterDisabled()``, ``Precomputed(cache_dir, batch_size)``), or
            the shortcuts ``"model"`` (``InitialPolicy()``) and ``"precomputed"``
            (``Precomputed(reference_cache_dir, reference_batch_size)``).
        reference_cache_dir: with ``reference="precomputed"``: where it writes its Arrow cache
            (``None``: memory).
        reference_batch_size: with ``reference="precomputed"``: pairs per scoring forward.
        max_prompt_length: keep only the last tokens of longer prompts.
        max_completion_length: keep only the first tokens (eos included) of each completion.
        prompt_format: ``auto`` applies the tokenizer's chat template when it has one
            (conversational rows: over their prompt messages).
        disable_dropout: set every dropout probability of the policy to 0 (as TRL), so policy
            and reference log-probs are deterministic.
        val_generate: also decode greedily at validation and score with each task's reward.
        val_max_new_tokens: completion limit for ``val_generate``.
        task_names: filled from ``data.task_names`` by the CLI; checked against the DataModule.
        on_nonfinite_loss: a NaN or infinite loss stops training with a checkpoint of the last
            good state (``stop``) or skips that step with a warning (``skip``).
        sharding: how ``configure_model`` shards the policy (and a reference copy) with FSDP2
            when the Trainer's strategy is ``ModelParallelStrategy``; ``None``: the decoder
            layers, no mixed precision or offload (:class:`gradbal.sharding.FSDP2Strategy`).
            Ignored under other strategies.

    Raises:
        ValueError: On sizes < 1, an unknown ``reference`` or a cache dir without
            ``reference="precomputed"``; at setup, for a task without ``chosen``/``rejected``.

    Example::

        >>> from gradbal.models import TinyPolicy
        >>> from gradbal.objectives import BalancedDPO
        >>> module = DPOModule(TinyPolicy(hidden_size=32, num_layers=1), BalancedDPO(beta=0.1))
        >>> module.objective
        BalancedDPO(beta=0.1, clip=2.0, reweight='chosen')
    """

    def __init__(
        self,
        policy: PolicySource,
        objective: PreferenceObjective | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        reference: Reference | ReferenceName = "model",
        reference_cache_dir: str | None = None,
        reference_batch_size: int = 32,
        max_prompt_length: int | None = None,
        max_completion_length: int | None = None,
        prompt_format: PromptFormat = "auto",
        disable_dropout: bool = True,
        val_generate: bool = False,
        val_max_new_tokens: int = 64,
        task_names: list[str] | None = None,
        on_nonfinite_loss: NonFiniteLoss = "stop",
        sharding: FSDP2Strategy | None = None,
    ):
        super().__init__()
        for arg, value in (
            ("reference_batch_size", reference_batch_size),
            ("max_prompt_length", max_prompt_length),
            ("max_completion_length", max_completion_length),
            ("val_max_new_tokens", val_max_new_tokens),
        ):
            if value is not None and value < 1:
                raise ValueError(f"DPOModule: {arg} must be >= 1 (or None). Got {value!r}.")
        if not isinstance(reference, Reference) and reference not in ("model", "precomputed"):
            raise ValueError(
                f"DPOModule: reference must be 'model' (a frozen copy, or the LoRA base), "
                f"'precomputed' (scored once at setup) or a gradbal.modules.Reference "
                f"(class_path). Got {reference!r}."
            )
        if reference_cache_dir is not None and reference != "precomputed":
            raise ValueError(
                f"DPOModule: reference_cache_dir={reference_cache_dir!r} only applies to "
                "reference='precomputed'. Set reference='precomputed' (or pass "
                "`Precomputed(cache_dir=...)`) or remove the cache dir."
            )
        self.save_hyperparameters(
            ignore=["policy", "optimizer", "lr_scheduler", "objective", "sharding", "reference"]
        )
        self.policy_source = policy
        self.sharding = sharding
        self.objective: PreferenceObjective = objective or DPO()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        if reference == "model":
            reference = InitialPolicy()
        elif reference == "precomputed":
            reference = Precomputed(reference_cache_dir, reference_batch_size)
        assert isinstance(reference, Reference)
        self.reference: Reference = reference
        self.max_prompt_length = max_prompt_length
        self.max_completion_length = max_completion_length
        self.prompt_format: PromptFormat = prompt_format
        self.disable_dropout = disable_dropout
        self.val_generate = val_generate
        self.val_max_new_tokens = val_max_new_tokens
        self.task_names = task_names
        self.on_nonfinite_loss: NonFiniteLoss = on_nonfinite_loss
        self.model: torch.nn.Module | None = None
        self.ref_model: torch.nn.Module | None = None
        self.ref_table: ReferenceTable | None = None
        self.task_losses: TaskLosses | None = None
        self.last_preferences: PreferenceReport | None = None

    # ---- set-up ----------------------------------------------------------------------------

    @override
    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model, self.tokenizer = self.policy_source.build()
        if self.disable_dropout:
            for m in self.model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
        self.ref_model = self.reference.frozen_copy(self.model)
        if self.ref_model is not None:
            shard_for_trainer(self, self.ref_model, self.sharding)
        shard_for_trainer(self, self.model, self.sharding)
        precomputed = self.reference if isinstance(self.reference, Precomputed) else None
        if is_sharded(self.model) and precomputed is not None and precomputed.cache_dir:
            raise NotImplementedError(
                "DPOModule: reference_cache_dir under ModelParallelStrategy: rank 0 scores the "
                "pairs first while the others wait, but a sharded model needs every rank in "
                "each forward. Remove reference_cache_dir (every rank then scores the pairs "
                "together) or train with strategy 'ddp'."
            )

    @override
    def setup(self, stage: str) -> None:
        self.configure_model()
        self.tasks, self.task_names = resolve_tasks(self, self.task_names)
        for task in self.tasks:
            check_preference_task(task, type(self).__name__)
        # The objective declares its diagnostics; the validation groups are fixed up front, so
        # every rank reduces the same tensor even if it saw no validation batch.
        groups = [LOSS, *PAIR_GROUPS, *self.objective.diagnostic_names]
        self.val_means = TaskMeans(groups, self.task_names).to(self.device)
        self.val_metric = TaskAccuracy(self.task_names).to(self.device)
        if not self.reference.forward and self.ref_table is None:
            self.ref_table = self._precompute_reference()

    # ---- log-probs -------------------------------------------------------------------------

    def _sequences(self, prompts: list[str], columns: list[dict[str, Any]]) -> Sequences:
        return pair_sequences(
            self.tokenizer,
            prompts,
            columns,
            self.device,
            prompt_format=self.prompt_format,
            max_prompt_length=self.max_prompt_length,
            max_completion_length=self.max_completion_length,
        )

    def _reference_forward(self, seqs: Sequences) -> Tensor:
        assert self.model is not None
        with self.reference.scoring(self.model, self.ref_model) as model:
            return sequence_logps(model, seqs)[0]

    def pair_logps(self, batch: dict[str, Any]) -> tuple[PreferenceLogps, Tensor]:
        """Policy (in the graph) and reference log-probs of a batch's pairs, and ``task_ids [B]``."""
        assert self.model is not None
        prompts, columns = list(batch["prompt"]), list(batch["columns"])
        seqs = self._sequences(prompts, columns)  # [2B, P + C]
        logps, lengths = sequence_logps(self.model, seqs)  # [2B], [2B]
        task_ids = batch["task_id"].to(self.device)  # [B]
        if self.ref_table is not None:
            ref_c, ref_r = self.ref_table.lookup(task_ids.tolist(), prompts, columns)
            ref = torch.cat([ref_c, ref_r]).to(logps)  # [2B]
        else:
            ref = self._reference_forward(seqs)  # [2B]
        b = len(prompts)
        out = PreferenceLogps(logps[:b], logps[b:], ref[:b], ref[b:], lengths[:b], lengths[b:])
        return out, task_ids

    def _reference_batch(
        self, prompts: list[str], columns: list[dict[str, Any]]
    ) -> tuple[Tensor, Tensor]:
        assert self.model is not None
        with torch.no_grad():  # the initial policy, in eval mode (see _precompute_reference)
            logps, _ = sequence_logps(self.model, self._sequences(prompts, columns))
        b = len(prompts)
        return logps[:b].float().cpu(), logps[b:].float().cpu()

    def _precompute_reference(self) -> ReferenceTable:
        """Score every pair of every task with the initial policy (rank 0 first under DDP)."""
        assert self.model is not None and isinstance(self.reference, Precomputed)
        trainer, cache_dir = trainer_of(self), self.reference.cache_dir
        if trainer is not None:
            self.model.to(trainer.strategy.root_device)
        distributed = trainer is not None and trainer.world_size > 1 and cache_dir is not None
        if distributed and trainer is not None and trainer.global_rank != 0:
            trainer.strategy.barrier("dpo_reference")  # rank 0 writes the cache first
        settings = repr(
            (self.prompt_format, self.max_prompt_length, self.max_completion_length,
             getattr(self.tokenizer, "chat_template", None))
        )  # fmt: skip
        weights = model_fingerprint(self.model, settings) if cache_dir else settings
        with self.reference.scoring(self.model, None):
            table = precompute_reference(
                self.tasks,
                self._reference_batch,
                weights_key=weights,
                cache_dir=cache_dir,
                batch_size=self.reference.batch_size,
            )
        if distributed and trainer is not None and trainer.global_rank == 0:
            trainer.strategy.barrier("dpo_reference")
        return table

    # ---- training and validation -----------------------------------------------------------

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        assert self.task_names is not None
        logps, task_ids = self.pair_logps(batch)
        out = self.objective(logps)
        check_diagnostics(self.objective, out)
        b = task_ids.shape[0]
        half = out.losses / (2 * b)  # [B] half of each pair's share of the batch mean
        loss = report_task_losses(
            self,
            torch.cat([half, half]),  # [2B] one entry per forward row
            task_ids.repeat(2),
            torch.arange(b, device=self.device).repeat(2),  # a pair's two rows: one group
            parts=(torch.arange(2 * b, device=self.device) >= b).long(),  # [2B] 1: rejected
        )
        self.last_preferences = PreferenceReport(  # for the statistic sources (contracts)
            self.global_step,
            batch_idx,
            task_ids,
            out.chosen_rewards.detach(),
            out.rejected_rewards.detach(),
        )
        log_task_means(
            self,
            "train",
            pair_metrics(out, logps),
            task_ids,
            self.task_names,
            prog_bar=(metric_name("train", REWARDS_ACCURACIES),),
        )
        log_task_means(
            self, "train", {LOSS: out.losses.detach()}, task_ids, self.task_names, overall=False
        )
        log_train_loss(self, loss)
        return guard_loss(self, loss, self.on_nonfinite_loss)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        release_host_memory(self.device)  # CPU: freed activations back to the OS (see module)

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logps, task_ids = self.pair_logps(batch)
        out = self.objective(logps)
        check_diagnostics(self.objective, out)
        self.val_means.update({LOSS: out.losses.detach(), **pair_metrics(out, logps)}, task_ids)
        if self.val_generate:
            assert self.model is not None
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
        self.val_means.log_and_reset(self, "val")
        if self.val_generate:
            self.val_metric.log_and_reset(self, "val")

    @override
    def on_test_epoch_end(self) -> None:
        self.val_means.log_and_reset(self, "test")
        if self.val_generate:
            self.val_metric.log_and_reset(self, "test")
