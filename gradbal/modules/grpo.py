"""GRPOModule: multi-task Group Relative Policy Optimization with verifiable rewards."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from typing_extensions import override

from gradbal.contracts import RolloutReport, prompt_refill, trainer_of
from gradbal.metric_names import (
    ABS_ADVANTAGE,
    CLIP_FRAC,
    COMPLETION_LEN,
    DISTINCT_FRAC,
    DS_DROPPED_GROUPS,
    DS_EXTRA,
    DS_ROUNDS,
    ENGINE_LOGPROB_GAP,
    KL,
    REWARD,
    REWARD_ERRORS,
    TIS_CAPPED_FRAC,
    TIS_WEIGHT,
    ZERO_STD_FRAC,
    metric_name,
)
from gradbal.models import PolicySource
from gradbal.modules._cross_rank import global_std, reduce_sum
from gradbal.modules._distinct import IdenticalGroupsWatch, distinct_fraction
from gradbal.modules._generation import decode, score_by_task
from gradbal.modules._host_memory import release_host_memory
from gradbal.modules._policy_module import (
    PolicyModule,
    resolve_tasks,
    validation_generation_step,
)
from gradbal.modules._prompt_lengths import (
    PromptTruncation,
    check_prompt_lengths,
    check_prompt_limits,
    max_positions,
)
from gradbal.modules._rollout_schedule import RolloutBuffer, rollout_slot
from gradbal.modules._sampling_checks import check_sampling
from gradbal.modules._sequences import (
    PromptFormat,
    Sequences,
    completion_logprobs,
    completion_mask,
    format_prompts,
    join,
    tokenize_prompts,
)
from gradbal.modules._task_metrics import (
    TaskAccuracy,
    log_task_counts,
    log_task_means,
    log_train_loss,
)
from gradbal.modules.dynamic_sampling import (
    DynamicSampling,
    concat_sequences,
    pad_columns,
    select_rows,
)
from gradbal.modules.reference import InitialPolicy, Reference
from gradbal.nonfinite_loss import NonFiniteLoss, guard_loss, nonfinite_logits_error
from gradbal.objectives import (
    AdvantageScale,
    DAPOAggregation,
    LossAggregation,
    TISWeights,
    TokenWindow,
    TruncatedImportanceSampling,
    group_advantages,
    grpo_token_loss,
    masked_sum,
    zero_std_groups,
)
from gradbal.rollout import HFGenerate, RolloutEngine, SamplingSettings, mix_seed
from gradbal.sharding import FSDP2Strategy, shard_for_trainer
from gradbal.step_metrics import log_step_metrics
from gradbal.task_losses import report_task_losses
from gradbal.tasks import OnRewardError
from gradbal.types import TaskLosses

# Checkpoint key of the generation seed (see GRPOModule.generation_seed).
_GENERATION_SEED_KEY = "gradbal_generation_seed"

#: ``auto``: the rollout engine's default (:attr:`RolloutEngine.needs_importance_sampling`);
#: ``off``: none; or the correction itself.
ImportanceSamplingSetting = TruncatedImportanceSampling | Literal["auto", "off"]


def resolve_importance_sampling(
    setting: ImportanceSamplingSetting, engine: RolloutEngine
) -> TruncatedImportanceSampling | None:
    """The correction GRPO applies with ``engine`` (``None``: none)."""
    if isinstance(setting, TruncatedImportanceSampling):
        return setting
    if setting not in ("auto", "off"):
        raise ValueError(
            f"importance_sampling must be 'auto', 'off' or a TruncatedImportanceSampling, got "
            f"{setting!r}. In YAML: `importance_sampling: {{mode: sequence_mask, cap: 3.0}}`."
        )
    if setting == "auto" and engine.needs_importance_sampling:
        return TruncatedImportanceSampling()
    return None


class DynamicSamplingCounts(NamedTuple):
    """What dynamic sampling did for one rollout (per generated group, over all rounds)."""

    task_ids: Tensor  # [groups generated] long, each group's task
    dropped: Tensor  # [groups generated] bool, all rewards equal: filtered out
    extra: Tensor  # [groups generated] bool, generated in an extra round (the cost)
    rounds: int  # extra rounds run


class _Groups(NamedTuple):
    """Sampled and scored groups, before advantages and fixed log-probs."""

    seqs: Sequences
    task_ids: Tensor  # [N]
    rewards: Tensor  # [N]
    truncated: Tensor  # [N] bool
    reward_errors: Tensor  # [N] bool
    engine_logprobs: Tensor | None  # [N, C]


class Rollout(NamedTuple):
    """One generation batch: B prompts x G completions, scored, with fixed log-probs."""

    seqs: Sequences
    task_ids: Tensor  # [N]
    group_ids: Tensor  # [N]
    rewards: Tensor  # [N]
    advantages: Tensor  # [N]
    truncated: Tensor  # [N] bool
    old_logprobs: Tensor | None  # [N, C], only when num_iterations > 1
    ref_logprobs: Tensor | None  # [N, C], only when beta > 0
    reward_errors: Tensor  # [N] bool, samples whose reward failed (on_reward_error="zero")
    engine_logprobs: Tensor | None = None  # [N, C], the rollout engine's sampled-token log-probs
    dynamic_sampling: DynamicSamplingCounts | None = None  # with `dynamic_sampling` only


class GRPOModule(PolicyModule):
    """Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath eq. 3) over many tasks.

    Each training step samples ``num_generations`` completions per prompt, scores them with the
    prompt's task reward, normalises rewards within each group into advantages, and minimises
    the clipped surrogate, aggregated by ``loss_aggregation`` (a class chosen in YAML). Optional:
    clip-higher (``epsilon_high``), a k3 KL penalty ``beta`` against a frozen reference (the
    adapter-disabled base under LoRA, so no second copy), ``num_iterations`` > 1 optimiser steps
    per rollout with importance ratios against the rollout's log-probs, and masking of truncated
    completions.

    Every ``training_step`` sets ``self.task_losses`` (:class:`gradbal.types.TaskLosses`): each
    completion's additive share of the loss, its task id and its group (prompt) id; and
    ``self.last_rollout`` (:class:`gradbal.contracts.RolloutReport`): each completion's reward and
    advantage, for the statistic sources (``LearnabilityMonitor``...).

    Gradient accumulation and data parallelism follow TRL's defaults
    (``steps_per_generation = gradient_accumulation_steps``), exactly:

    * Rollouts: with ``K = accumulate_grad_batches``, one generation cycle is ``num_iterations``
      optimiser steps. Its first step generates one rollout per micro-batch (from that
      micro-batch's prompts, sampled with a seed of ``(generation_seed, step, rank, k)``); its
      later steps train on the same ``K`` rollouts again, micro-batch ``k`` on rollout ``k``. The
      data batches Lightning feeds on those reuse micro-batches are ignored (see
      :mod:`gradbal.modules._rollout_schedule`).
    * DAPO (the default aggregation): every active token of the optimiser step's ``K``
      micro-batches on all ranks has the gradient weight ``1 / N``, ``N`` their total active
      tokens (TRL divides by the generation batch's token count). ``N`` is only known after the
      last micro-batch, so each micro-batch divides by a provisional count and the accumulated
      gradient is multiplied by :attr:`grad_rescale` in :meth:`on_before_optimizer_step`, before
      clipping (:class:`gradbal.objectives.token_window.TokenWindow`). Without accumulation the
      factor is exactly 1. The other aggregations are per micro-batch, as in TRL (Lightning
      divides each micro-batch's loss by ``K``, as TRL does).
    * ``train/loss`` is the optimiser step's loss (for DAPO ``sum l / N`` over the step's
      tokens), logged once per optimiser step.

    Logged: ``train/loss``, ``train/reward`` and ``train/reward/<task>``, ``train/kl``,
    ``train/clip_frac``, ``train/completion_len/<task>``, ``train/zero_std_frac/<task>``,
    ``train/distinct_frac/<task>`` (distinct completions per group over ``num_generations``,
    mean over the task's groups: ``1/G`` when every completion of every group is the same),
    ``train/truncated_frac``, ``train/engine_logprob_gap/<task>``,
    with TIS ``train/tis_capped_frac/<task>`` and ``train/tis_weight/<task>`` (the mixture,
    ``train/sampling_prob/<task>``, is logged by ``TaskSamplingScheduler``); validation (greedy
    decoding):
    ``val/accuracy/<task>``, ``val/reward/<task>``, ``val/accuracy``.

    Assumptions:
        The DataModule exposes ``tasks`` (with reward functions) and ``task_names``, and yields
        batches with ``task_id``, ``prompt``, ``answer`` and ``columns`` (docs/design.md).
        Automatic optimisation; one optimiser step per training batch.

    Args:
        policy: where the model and tokenizer come from (``TinyPolicy``, ``PretrainedPolicy``).
        optimizer: optimizer factory (default ``torch.optim.AdamW`` with its own default lr;
            set ``lr`` explicitly, around 1e-6 for billion-parameter models).
        lr_scheduler: optional scheduler factory, stepped every optimiser step.
        loss_aggregation: how per-token losses become the batch loss (default DAPO, TRL's default).
        num_generations: completions per prompt (G >= 2 with ``scale_rewards="group"``).
        max_new_tokens: completion length limit for training rollouts.
        temperature: sampling temperature (log-probs for the loss use the same temperature);
            at least 1e-3 (lower is greedy: identical completions, nothing to learn).
        top_p: nucleus sampling, in ``(0, 1]`` (``1``: off).
        top_k: top-k sampling, at least 2 (``None`` or 0: off; 1 would be greedy).
        scale_rewards: divide advantages by the group's std, the batch's, or not at all.
            ``"batch"``: the std of the rewards of all ranks' micro-batches (TRL gathers them
            over processes; TRL's std also spans the ``K`` micro-batches of an accumulation
            window, which gradbal generates one at a time, so with ``K > 1`` it is the std of
            the micro-batch's global batch).
        epsilon_low: lower clip range.
        epsilon_high: upper clip range (``None``: equal to ``epsilon_low``; DAPO uses 0.28).
        beta: KL coefficient (0 disables the reference model entirely).
        reference: where the KL term's reference log-probs come from
            (:mod:`gradbal.modules.reference`): ``InitialPolicy()`` (default: the
            adapter-disabled base under LoRA, else a frozen copy), ``FrozenCopy()`` or
            ``AdapterDisabled()``. Used only with ``beta > 0``.
        num_iterations: optimiser steps per rollout batch (TRL's ``num_iterations``): each
            generation cycle's rollouts are trained on this many times; the data batches of the
            reuse steps are ignored. Resuming inside a cycle regenerates its rollouts from the
            resumed policy and that step's batches (no rollouts in checkpoints), so it is not
            bit-for-bit the uninterrupted run; resume at a multiple of ``num_iterations``.
        mask_truncated_completions: exclude completions that hit ``max_new_tokens`` from the loss.
        max_prompt_length: longest prompt in tokens (chat template included); see
            ``prompt_truncation``. Every prompt is measured at ``setup``, before step 0, and
            prompt + ``max_new_tokens`` must fit the model's maximum positions
            (``config.max_position_embeddings`` / ``n_positions``; skipped for a model that
            declares none).
        prompt_truncation: longer prompts keep their last ``max_prompt_length`` tokens
            (``left``, TRL's default; a warning at setup counts them) or stop the run at setup,
            naming the first such row (``error``).
        prompt_format: ``auto`` applies the tokenizer's chat template when it has one.
        val_max_new_tokens: completion limit at validation (default ``max_new_tokens``).
        task_names: filled from ``data.task_names`` by the CLI; checked against the DataModule.
        on_nonfinite_loss: a NaN or infinite loss stops training with a checkpoint of the last
            good state (``stop``) or skips that step with a warning (``skip``).
        on_reward_error: a reward that raises, returns the wrong length or a non-finite value
            stops training, naming the task and an example input (``raise``), or scores the
            failing samples 0.0 and counts them in ``train/reward_errors/<task>`` (``zero``).
        generation_seed: seed of the sampling RNG; the completions of step ``s``, micro-batch
            ``k`` on rank ``r`` are drawn with a seed derived from ``(generation_seed, s, r, k)``
            (``k = 0`` without gradient accumulation), so a resumed run
            generates exactly what the uninterrupted run would have. ``None``: the seed torch
            had at ``setup`` (``seed_everything``'s), saved in checkpoints.
        identical_groups_patience: warn when every group of a task has had identical
            completions for this many consecutive steps (``None``: never).
        sharding: how ``configure_model`` shards the policy (and a reference copy) with FSDP2
            when the Trainer's strategy is ``ModelParallelStrategy``; ``None``: the decoder
            layers, no mixed precision or offload (:class:`gradbal.sharding.FSDP2Strategy`).
            Ignored under other strategies.
        rollout_engine: what samples the training rollouts (:mod:`gradbal.rollout`); ``None``:
            :class:`~gradbal.rollout.HFGenerate` (``generate`` on the live policy). Its
            sampled-token log-probs are compared with the trainer's in
            ``train/engine_logprob_gap/<task>`` (mean ``|trainer - engine|`` per completion
            token, at the rollout's first training step); ``old_logprobs`` still come from the
            trainer's forward.
        share_prompt_forward: score each group's completions with its prompt encoded once and
            its KV cache repeated for the ``num_generations`` completions (policy, old and
            reference log-probs), instead of encoding the prompt once per completion. Same
            values up to float rounding, about ``(G - 1) / G`` of the prompt tokens' forward and
            backward work saved. Models without a plain KV cache use the full forward whatever
            this says, and with gradient checkpointing (it drops the cache in a forward with
            gradient) so does the policy forward; the no-grad reference forward still shares.
        dynamic_sampling: DAPO's dynamic sampling (:class:`~gradbal.modules.DynamicSampling`):
            drop groups whose rewards are all equal and refill the rollout with groups of extra
            prompts from the DataModule (``draw_prompts``), for at most ``max_rounds`` extra
            rounds; dropped groups and extra completions are logged per task. ``None``: off.
        importance_sampling: the truncated importance-sampling (TIS) correction of the policy
            loss for an engine that samples with its own kernels, TRL's
            ``vllm_importance_sampling_*``: each token's clipped surrogate is multiplied by
            ``exp(trainer_old_logp - engine_logp)`` (per token or per completion, truncated or
            masked above a cap; :func:`gradbal.objectives.tis_weights`). ``auto`` (default):
            TRL's ``sequence_mask`` with cap 3 for engines that declare
            ``needs_importance_sampling`` (vLLM), none for ``HFGenerate``, whose log-probs are
            the trainer's own; ``off``; or ``{mode: token_truncate, cap: 2.0}``. When applied,
            ``train/tis_capped_frac/<task>`` (the share of completions, or of tokens in the
            token modes, whose ratio exceeded the cap) and ``train/tis_weight/<task>`` (mean
            weight per token) are logged at the rollout's first training step.
    """

    def __init__(
        self,
        policy: PolicySource,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        loss_aggregation: LossAggregation | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        scale_rewards: AdvantageScale = "group",
        epsilon_low: float = 0.2,
        epsilon_high: float | None = None,
        beta: float = 0.0,
        reference: Reference | None = None,
        num_iterations: int = 1,
        mask_truncated_completions: bool = False,
        max_prompt_length: int | None = None,
        prompt_format: PromptFormat = "auto",
        val_max_new_tokens: int | None = None,
        task_names: list[str] | None = None,
        on_nonfinite_loss: NonFiniteLoss = "stop",
        on_reward_error: OnRewardError = "raise",
        generation_seed: int | None = None,
        prompt_truncation: PromptTruncation = "left",
        identical_groups_patience: int | None = 10,
        sharding: FSDP2Strategy | None = None,
        rollout_engine: RolloutEngine | None = None,
        share_prompt_forward: bool = True,
        dynamic_sampling: DynamicSampling | None = None,
        importance_sampling: ImportanceSamplingSetting = "auto",
    ):
        super().__init__()
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
        if num_generations == 1 and scale_rewards == "group":
            raise ValueError(
                "num_generations=1 with scale_rewards='group': a group of one completion has no "
                "spread, so every advantage would be 0 and nothing would be learned. Use "
                "num_generations >= 2 (GRPO needs several completions per prompt)."
            )
        if max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens must be >= 1, got {max_new_tokens}: the model must be allowed "
                "to write at least one token."
            )
        if num_iterations < 1:
            raise ValueError(
                f"num_iterations must be >= 1, got {num_iterations}. Use 1 for one optimiser "
                "step per rollout (the default), more to reuse each rollout."
            )
        if temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 for sampling, got {temperature}. GRPO needs sampled, "
                "varied completions: use 1.0 (the default) or e.g. 0.7; greedy decoding is what "
                "validation does already."
            )
        check_sampling(temperature, top_p, top_k)
        check_prompt_limits(max_prompt_length, prompt_truncation)
        if beta < 0:
            raise ValueError(
                f"beta (KL coefficient) must be >= 0, got {beta}. Use 0 for no KL penalty (no "
                "reference model) or a small positive value such as 0.04."
            )
        if reference is not None and not reference.forward:
            raise ValueError(
                f"GRPOModule(reference={reference!r}): GRPO's completions are new at every step, "
                "so their reference log-probs cannot be scored in advance. Use InitialPolicy(), "
                "FrozenCopy() or AdapterDisabled()."
            )
        self.save_hyperparameters(
            ignore=[
                "policy",
                "optimizer",
                "lr_scheduler",
                "loss_aggregation",
                "sharding",
                "rollout_engine",
                "dynamic_sampling",
                "importance_sampling",
                "reference",
            ]
        )
        self.rollout_engine: RolloutEngine = rollout_engine or HFGenerate()
        #: The TIS correction in use (``None``: none), from ``importance_sampling``.
        self.importance_sampling = resolve_importance_sampling(
            importance_sampling, self.rollout_engine
        )
        self.policy_source = policy
        self.sharding = sharding
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.loss_aggregation: LossAggregation = loss_aggregation or DAPOAggregation()
        self.num_generations = num_generations
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.scale_rewards: AdvantageScale = scale_rewards
        self.epsilon_low, self.epsilon_high, self.beta = epsilon_low, epsilon_high, beta
        self.reference: Reference = reference or InitialPolicy()
        self.num_iterations = num_iterations
        self.share_prompt_forward = share_prompt_forward
        self.dynamic_sampling = dynamic_sampling
        self.mask_truncated_completions = mask_truncated_completions
        self.max_prompt_length = max_prompt_length
        self.prompt_truncation: PromptTruncation = prompt_truncation
        self.identical_groups_patience = identical_groups_patience
        IdenticalGroupsWatch([], identical_groups_patience)  # checks the value now
        self.prompt_format: PromptFormat = prompt_format
        self.val_max_new_tokens = val_max_new_tokens or max_new_tokens
        self.task_names = task_names
        self.on_nonfinite_loss: NonFiniteLoss = on_nonfinite_loss
        if on_reward_error not in ("raise", "zero"):
            raise ValueError(f"on_reward_error must be 'raise' or 'zero'. Got {on_reward_error!r}.")
        self.on_reward_error: OnRewardError = on_reward_error
        self._reward_errors_warned: set[str] = set()  # tasks already warned about, once each
        self.generation_seed = generation_seed
        self.model: torch.nn.Module | None = None
        self.ref_model: torch.nn.Module | None = None
        self.task_losses: TaskLosses | None = None
        self.last_rollout: RolloutReport | None = None
        self._rollouts: RolloutBuffer[Rollout] = RolloutBuffer()
        self._token_window: TokenWindow | None = None
        #: The factor :meth:`on_before_optimizer_step` multiplies the accumulated gradients by
        #: (DAPO's token mean over an accumulation window; 1.0 otherwise). Final after the
        #: window's last ``training_step``: a callback's ``on_before_optimizer_step`` runs before
        #: the module's, so it sees the gradient (and per-row loss shares) *before* this factor.
        self.grad_rescale = 1.0
        self._new_rollout = False  # the current batch's rollout was generated for it (not reused)

    # ---- set-up ----------------------------------------------------------------------------

    @override
    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model, self.tokenizer = self.policy_source.build()
        if self.beta > 0:
            self.ref_model = self.reference.frozen_copy(self.model)
            if self.ref_model is not None:
                shard_for_trainer(self, self.ref_model, self.sharding)
        shard_for_trainer(self, self.model, self.sharding)

    @override
    def setup(self, stage: str) -> None:
        self.configure_model()
        self.tasks, self.task_names = resolve_tasks(self, self.task_names)
        self.val_metric = TaskAccuracy(self.task_names).to(self.device)
        assert self.model is not None
        check_prompt_lengths(  # before step 0: every prompt of every task fits
            self.tasks,
            self.tokenizer,
            prompt_format=self.prompt_format,
            max_prompt_length=self.max_prompt_length,
            truncation=self.prompt_truncation,
            new_tokens={
                "train": ("max_new_tokens", self.max_new_tokens),
                "validation": ("val_max_new_tokens", self.val_max_new_tokens),
            },
            positions=max_positions(self.model),
        )
        self._identical_groups = IdenticalGroupsWatch(
            self.task_names, self.identical_groups_patience
        )
        if self.generation_seed is None:
            self.generation_seed = torch.initial_seed()

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_GENERATION_SEED_KEY] = self.generation_seed
        super().on_save_checkpoint(checkpoint)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get(_GENERATION_SEED_KEY) is not None:
            self.generation_seed = int(checkpoint[_GENERATION_SEED_KEY])
        super().on_load_checkpoint(checkpoint)

    # ---- rollouts --------------------------------------------------------------------------

    def _logprobs(self, model: torch.nn.Module, seqs: Sequences) -> Tensor:
        group = self.num_generations if self.share_prompt_forward else 1
        return completion_logprobs(model, seqs, self.temperature, group_size=group)

    def _policy_logprobs(self, seqs: Sequences) -> Tensor:
        assert self.model is not None
        return self._logprobs(self.model, seqs)

    def _reference_logprobs(self, seqs: Sequences) -> Tensor:
        assert self.model is not None
        with self.reference.scoring(self.model, self.ref_model) as model:
            return self._logprobs(model, seqs)

    def make_rollout(self, batch: dict[str, Any], micro_batch: int = 0) -> Rollout:
        """Generate, score and compute advantages for one batch of prompts.

        ``micro_batch``: the batch's position in the accumulation window (part of the seed).
        With ``dynamic_sampling``, groups with all-equal rewards are dropped and refilled from
        the DataModule (see :class:`~gradbal.modules.DynamicSampling`).
        """
        seed = self.generation_seed
        base = (
            None
            if seed is None
            else mix_seed(seed, self.global_step, self.global_rank, micro_batch)
        )
        groups = self._sample_groups(batch, base)
        drops = None
        if self.dynamic_sampling is not None:
            groups, drops = self._fill_groups(groups, len(batch["prompt"]), base)
        g = self.num_generations
        seqs, rewards = groups.seqs, groups.rewards
        with torch.no_grad():
            old = self._policy_logprobs(seqs) if self.num_iterations > 1 else None
        return Rollout(
            seqs=seqs,
            task_ids=groups.task_ids,
            group_ids=torch.arange(rewards.shape[0] // g, device=self.device).repeat_interleave(g),
            rewards=rewards,
            advantages=group_advantages(
                rewards,
                g,
                self.scale_rewards,
                batch_std=global_std(self, rewards) if self.scale_rewards == "batch" else None,
            ),
            reward_errors=groups.reward_errors,
            truncated=groups.truncated,
            old_logprobs=old,
            ref_logprobs=self._reference_logprobs(seqs) if self.beta > 0 else None,
            engine_logprobs=groups.engine_logprobs,
            dynamic_sampling=drops,
        )

    def _sample_groups(self, batch: dict[str, Any], seed: int | None) -> _Groups:
        """``num_generations`` completions of each prompt of ``batch``, scored."""
        assert self.model is not None
        g = self.num_generations
        prompts = format_prompts(self.tokenizer, batch["prompt"], self.prompt_format)
        ids, mask = tokenize_prompts(self.tokenizer, prompts, self.max_prompt_length, self.device)
        engine = self.rollout_engine
        engine.attach(self.model, self.tokenizer)
        if engine.weight_version != self.global_step:  # once per optimizer step (lazy)
            engine.sync_weights(
                self.model.named_parameters() if engine.needs_weight_sync else (),
                self.global_step,
            )
        generated = engine.generate(
            ids,
            mask,
            num_completions=g,
            sampling=SamplingSettings(
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
            ),
            seed=seed,
            nonfinite_error=lambda: nonfinite_logits_error(self, "sampling completions"),
        )
        completion_ids = generated.completion_ids  # [B*G, C]
        cmask, truncated = completion_mask(completion_ids, self.tokenizer.eos_token_id)
        seqs = join(
            ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0), completion_ids, cmask
        )
        rep = lambda xs: [x for x in xs for _ in range(g)]  # noqa: E731
        task_ids = torch.as_tensor(batch["task_id"]).to(self.device).repeat_interleave(g)  # [N]
        scores = score_by_task(
            self.tasks,
            task_ids.tolist(),
            rep(batch["prompt"]),
            decode(self.tokenizer, completion_ids, cmask),
            rep(batch["answer"]),
            rep(batch["columns"]),
            self.on_reward_error,
            self._reward_errors_warned,
        )
        return _Groups(
            seqs,
            task_ids,
            scores.rewards.to(self.device),
            truncated,
            scores.failed.to(self.device),
            generated.logprobs,
        )

    def _fill_groups(
        self, first: _Groups, target: int, base: int | None
    ) -> tuple[_Groups, DynamicSamplingCounts]:
        """DAPO's dynamic sampling: keep groups whose rewards differ, refill up to ``target``."""
        options = self.dynamic_sampling
        assert options is not None
        g = self.num_generations
        refill = prompt_refill(trainer_of(self), type(self).__name__)
        parts = [first]
        kept_flags = [~zero_std_groups(first.rewards, g)]  # [B] per round
        kept, drawn, rounds = int(kept_flags[0].sum()), target, 0
        while rounds < options.max_rounds:
            short = max(target - kept, 0)
            if int(reduce_sum(self, torch.tensor(float(short), device=self.device))) == 0:
                break  # every rank is full
            rounds += 1
            n = options.round_size(short, kept, drawn, target)
            if base is None:
                seed = int(torch.randint(2**62, (1,)))
            else:
                seed = mix_seed(base, rounds, 1)
            extra = refill.draw_prompts(n, seed=mix_seed(seed, 0, 2))
            part = self._sample_groups(extra, None if base is None else seed)
            parts.append(part)
            kept_flags.append(~zero_std_groups(part.rewards, g))
            kept += int(kept_flags[-1].sum())
            drawn += n
        keep = torch.cat(kept_flags)  # [groups generated]
        groups_task = torch.cat([p.task_ids[::g] for p in parts])  # [groups generated]
        extra_groups = torch.zeros_like(keep)
        extra_groups[target:] = True
        counts = DynamicSamplingCounts(groups_task, ~keep, extra_groups, rounds)
        chosen = keep.nonzero().flatten()[:target]  # the first `target` kept groups, in order
        if chosen.numel() == 0:
            return first, counts  # nothing kept: the batch as it was (all advantages 0)
        if rounds == 0 and chosen.numel() == target:
            return first, counts
        rows = (chosen[:, None] * g + torch.arange(g, device=chosen.device)).flatten()  # [M*G]
        seqs = concat_sequences([p.seqs for p in parts], self.tokenizer.pad_token_id)
        width = seqs.completion_mask.shape[1]
        logprobs = [p.engine_logprobs for p in parts]
        engine = (
            None
            if any(x is None for x in logprobs)
            else torch.cat([pad_columns(x, width) for x in logprobs])  # type: ignore[misc]
        )
        return (
            _Groups(
                select_rows(seqs, rows),
                torch.cat([p.task_ids for p in parts])[rows],
                torch.cat([p.rewards for p in parts])[rows],
                torch.cat([p.truncated for p in parts])[rows],
                torch.cat([p.reward_errors for p in parts])[rows],
                None if engine is None else engine[rows],
            ),
            counts,
        )

    # ---- training --------------------------------------------------------------------------

    def _rollout_for(self, batch: dict[str, Any], batch_idx: int) -> Rollout:
        """The rollout micro-batch ``batch_idx`` trains on: generated now, or the cycle's."""
        trainer = trainer_of(self)
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        slot = rollout_slot(self.global_step, batch_idx, accumulate, self.num_iterations)
        rollout = None if slot.generate else self._rollouts.get(slot)
        new = rollout is None
        self._new_rollout = new
        if rollout is None:
            rollout = self.make_rollout(batch, slot.position)
            self._rollouts.put(slot, rollout)
        drops = rollout.dynamic_sampling
        generated = None if drops is None else drops.task_ids.numel() * self.num_generations
        self.last_rollout = RolloutReport(  # for the statistic sources (gradbal.contracts)
            self.global_step, batch_idx, rollout.task_ids, rollout.group_ids, rollout.rewards,
            rollout.advantages, new, generated,
        )  # fmt: skip
        return rollout

    def _window(self, batch_idx: int) -> TokenWindow:
        """This accumulation window's token counts (a new one at each window's first batch)."""
        trainer = trainer_of(self)
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        if self._token_window is None or batch_idx % accumulate == 0:
            world_size = trainer.world_size if trainer is not None else 1
            self._token_window = TokenWindow(world_size, accumulate)
            self.grad_rescale = 1.0
        return self._token_window

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        r = self._rollout_for(batch, batch_idx)
        pi = self._policy_logprobs(r.seqs)  # [N, C]
        old = r.old_logprobs if r.old_logprobs is not None else pi.detach()  # [N, C]
        tis = self._tis_weights(r, old)
        out = grpo_token_loss(
            pi,
            old,
            r.advantages,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            ref_logprobs=r.ref_logprobs,
            beta=self.beta,
            importance_weights=None if tis is None else tis.weights,
        )
        mask = r.seqs.completion_mask  # [N, C]
        if self.mask_truncated_completions:
            mask = mask & ~r.truncated.unsqueeze(1)
        window = self._window(batch_idx)
        global_tokens = reduce_sum(self, mask.sum().float())  # [] active tokens, all ranks
        shares = self.loss_aggregation(
            out.per_token_loss,
            mask,
            max_completion_length=self.max_new_tokens,
            global_num_tokens=(
                window.normaliser(global_tokens)
                if self.loss_aggregation.global_token_mean
                else None
            ),
        )  # [N]
        loss = report_task_losses(self, shares, r.task_ids, r.group_ids)  # task loss weights
        if self._new_rollout:  # first step on this rollout: the weights it came from
            self._log_engine_gap(r, old, tis)
        self._log_step(r, out.is_clipped, out.kl, mask)
        guarded = guard_loss(self, loss, self.on_nonfinite_loss)
        if guarded is not None:
            window.add(global_tokens, loss)
            self.grad_rescale = window.rescale()
        return guarded

    @override
    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Apply :attr:`grad_rescale` (before Lightning clips) and log the step's ``train/loss``."""
        window = self._token_window
        if window is None:
            return
        scale = window.rescale()
        if scale != 1.0:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.mul_(scale)
        step_loss = window.step_loss()
        if step_loss is not None:
            log_train_loss(self, step_loss.to(self.device))
        self._token_window = None

    def _tis_weights(self, r: Rollout, trainer_logprobs: Tensor) -> TISWeights | None:
        """The TIS weights of rollout ``r`` (``None`` without the correction)."""
        tis = self.importance_sampling
        if tis is None:
            return None
        if r.engine_logprobs is None:
            raise RuntimeError(
                f"V01: importance_sampling={tis} weighs each token by exp(trainer - engine "
                f"log-prob), but the rollout engine {type(self.rollout_engine).__name__} "
                "returned no log-probs (RolloutBatch.logprobs is None). Turn them on (e.g. "
                "HFGenerate(logprobs=true)) or set importance_sampling: off."
            )
        engine = r.engine_logprobs.to(trainer_logprobs.device)  # [N, C]
        return tis(trainer_logprobs, engine, r.seqs.completion_mask)

    def _log_engine_gap(self, r: Rollout, trainer_logprobs: Tensor, tis: TISWeights | None) -> None:
        """``train/engine_logprob_gap[/<task>]`` (mean |trainer - engine| log-prob per token),
        and with TIS ``train/tis_capped_frac[/<task>]`` and ``train/tis_weight[/<task>]``."""
        if r.engine_logprobs is None:
            return
        assert self.task_names is not None and trainer_logprobs.dim() == 2
        cmask = r.seqs.completion_mask  # [N, C]
        tokens = cmask.sum(1).float()  # [N]
        gap = (trainer_logprobs - r.engine_logprobs.to(trainer_logprobs.device)).abs()  # [N, C]
        groups = {ENGINE_LOGPROB_GAP: masked_sum(gap, cmask, dim=1)}
        weights = {ENGINE_LOGPROB_GAP: tokens, TIS_WEIGHT: tokens}
        if tis is not None:
            groups[TIS_WEIGHT] = masked_sum(tis.weights, cmask, dim=1)
            if self.importance_sampling is not None and self.importance_sampling.per_token:
                groups[TIS_CAPPED_FRAC] = tis.capped.sum(1).float()  # share of tokens
                weights[TIS_CAPPED_FRAC] = tokens
            else:
                groups[TIS_CAPPED_FRAC] = tis.capped.any(1).float()  # share of completions
        log_task_means(self, "train", groups, r.task_ids, self.task_names, weights=weights)

    def _log_step(self, r: Rollout, clipped: Tensor, kl: Tensor | None, mask: Tensor) -> None:
        assert self.task_names is not None
        g = self.num_generations
        cmask = r.seqs.completion_mask
        distinct = distinct_fraction(r.seqs.input_ids[:, r.seqs.prompt_length :], cmask, g)  # [B]
        first_use = self._new_rollout
        if first_use:  # a rollout reused by num_iterations counts once
            self._identical_groups.update(distinct, r.task_ids[::g], g)
        per_sample: dict[str, Tensor] = {
            REWARD: r.rewards,
            COMPLETION_LEN: cmask.sum(1).float(),
            ZERO_STD_FRAC: zero_std_groups(r.rewards, g).float().repeat_interleave(g),
            CLIP_FRAC: masked_sum(clipped.float(), mask, dim=1),  # over tokens: see weights
            DISTINCT_FRAC: distinct.repeat_interleave(g),
            "truncated_frac": r.truncated.float(),
            ABS_ADVANTAGE: r.advantages.abs(),
        }
        if kl is not None:
            per_sample[KL] = masked_sum(kl, mask, dim=1)
        # clip_frac and kl are token means (as TRL's), sums and token counts over all ranks
        num_tokens = mask.sum(1).float()  # [N]
        log_task_means(
            self,
            "train",
            per_sample,
            r.task_ids,
            self.task_names,
            prog_bar=("train/reward",),
            weights={CLIP_FRAC: num_tokens, KL: num_tokens},
        )
        if r.dynamic_sampling is not None and first_use:
            self._log_dynamic_sampling(r.dynamic_sampling)
        if self.on_reward_error == "zero":
            log_task_counts(
                self, "train", REWARD_ERRORS, r.reward_errors, r.task_ids, self.task_names
            )

    def _log_dynamic_sampling(self, counts: DynamicSamplingCounts) -> None:
        """Per task: groups dropped and completions generated in extra rounds; rounds run."""
        assert self.task_names is not None
        g = self.num_generations
        for name, flags in ((DS_DROPPED_GROUPS, counts.dropped), (DS_EXTRA, counts.extra * g)):
            log_task_counts(self, "train", name, flags, counts.task_ids, self.task_names)
        rounds = torch.tensor(float(counts.rounds), device=self.device)
        log_step_metrics(self, {metric_name("train", DS_ROUNDS): rounds})

    # ---- validation ------------------------------------------------------------------------

    @override
    def teardown(self, stage: str) -> None:
        self.rollout_engine.close()

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        release_host_memory(self.device)  # CPU: freed activations back to the OS (see module)

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
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
            on_reward_error=self.on_reward_error,
            warned=self._reward_errors_warned,
        )

    @override
    def on_validation_epoch_end(self) -> None:
        self.val_metric.log_and_reset(self, "val")

    @override
    def on_test_epoch_end(self) -> None:
        self.val_metric.log_and_reset(self, "test")
