"""FAMOReweighter: FAMO's task loss weights, from the change of each task's log loss."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._prerequisites import sole_writer, task_names
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.callbacks.statistics import StatisticSource, find_source
from gradbal.contracts import ReportsRollout
from gradbal.metric_names import LOSS_WEIGHT, metric_name
from gradbal.task_losses import set_task_loss_weights
from gradbal.weighting.famo import AdamState, adam_step, famo_logit_grad, famo_weights


class FAMOReweighter(Callback):
    """Sets per-task loss weights by FAMO, so the tasks' log losses fall at equal rates.

    FAMO (Liu, Feng, Stone, Liu 2023, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS,
    arXiv:2306.03792, Alg. 1; the math in :mod:`gradbal.weighting.famo`): task logits ``xi``,
    ``z = softmax(xi)``, loss weights ``w_i ∝ z_i / L_i``; after each measurement the logits
    take one Adam step along ``J_softmax(xi)^T delta`` plus weight decay ``gamma xi``, with
    ``delta_i = log L_i(previous) - log L_i(now)``: a task whose log loss fell faster than the
    others' loses weight. The weights are scaled to average 1 (gradbal's convention) and set
    with :func:`gradbal.set_task_loss_weights`, as :class:`TaskLossReweighter` does (so the two
    never go in one Trainer: ``setup`` refuses the pair).

    FAMO is stateful (the logits, Adam's moments, the previous losses), unlike gradbal's
    stateless rules, hence a callback of its own rather than a rule: all of it is in
    :meth:`state_dict`, so a resumed run continues bit for bit, and it is computed in float64
    on the CPU from the source's losses, which are pooled over every rank (the source
    all-reduces sums and counts: FAMO's loss of the global batch, not each rank's own), so the
    whole state is identical on every rank (and the weights are broadcast from rank 0 to make it
    a guarantee; ``tests/integration/test_ddp_agreement.py`` checks it under 2-process DDP).

    The losses come from :class:`TaskLossMonitor` (``"task_loss"``, each task's pooled training
    loss per row with the weights divided out), one FAMO step per window of the monitor:
    ``window=1`` is FAMO's per-step update.

    Reconstructed, not in FAMO: ``L_i(t+1)`` is the next window's loss, on other data, where
    FAMO recomputes the loss of the same batch after the step (one more forward; its reference
    code also allows the next step's loss); a longer window pools more rows per step (less
    noise, fewer steps). A task without a loss in both windows gets ``delta_i = 0``; until
    every task has a loss, the weights stay 1. ``L_min = 0`` (FAMO's default minimum losses).

    FAMO needs positive losses (``log L``): use it with DPO or SFT. GRPO's loss is a
    policy-gradient surrogate with mean about 0, so a module that reports GRPO rollouts
    (``GRPOModule``, any :class:`gradbal.contracts.ReportsRollout`) is refused at ``setup``,
    and a task loss <= 0 stops training with an error.

    Logged: ``train/loss_weight/<task>`` every batch.

    Args:
        lr: Adam's learning rate on the logits (FAMO's ``w_lr`` / ``beta``), > 0.
        gamma: Weight decay of the logits, >= 0 (pulls the weights towards ``z`` uniform).

    Raises:
        ValueError: On ``lr`` not finite and positive, or ``gamma`` not finite and >= 0.
        RuntimeError: At ``setup`` beside another callback that sets the task loss weights
            (a :class:`TaskLossReweighter`, another ``FAMOReweighter``), without
            ``trainer.datamodule.task_names``, without one ``TaskLossMonitor``, or with a module
            that reports rollouts; when a measured task loss is <= 0; at fit start if a restored
            state was made with other tasks.

    Attributes:
        weights: The current loss weights (task order), or ``None`` before fit start.
        writes: ``"task_loss_weights"``, the state it owns: a Trainer with two callbacks that
            write it is refused at ``setup`` (docs/errors.md F11).
        logits: FAMO's ``xi`` (task order).

    Example::

        >>> FAMOReweighter(lr=0.025).state_key
        "FAMOReweighter{'lr': 0.025, 'gamma': 0.01}"
    """

    statistic = "task_loss"
    writes: ClassVar[str] = "task_loss_weights"
    task_metric_groups = (metric_name("train", LOSS_WEIGHT),)

    def __init__(self, lr: float = 0.025, gamma: float = 0.01):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"F06: FAMOReweighter needs a finite `lr` > 0. Got {lr}.")
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"F06: FAMOReweighter needs a finite `gamma` >= 0. Got {gamma}.")
        self.lr, self.gamma = lr, gamma
        self.source: StatisticSource | None = None
        self._task_names: list[str] = []
        # state
        self.weights: list[float] | None = None
        self.logits: list[float] = []
        self.exp_avg: list[float] = []
        self.exp_avg_sq: list[float] = []
        self.last_loss: list[float] = []  # per task, NaN until measured
        self.num_updates = 0  # Adam steps taken
        self.ingested_step = -1
        self._restored_names: list[str] | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(lr=self.lr, gamma=self.gamma)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        sole_writer(trainer, self.writes)
        owner = type(self).__name__
        if isinstance(pl_module, ReportsRollout):  # a policy-gradient module, e.g. GRPOModule
            raise RuntimeError(
                f"F07: {owner} weights each task by 1 / its loss and follows log(loss), which "
                f"needs positive losses, but {type(pl_module).__name__} reports GRPO rollouts "
                "(gradbal.contracts.ReportsRollout), whose loss is a policy-gradient surrogate "
                "with mean about 0. Use FAMOReweighter with DPOModule or SFTModule; for GRPO, "
                "mix tasks with TaskSamplingScheduler (e.g. SkillGraphWeights reading "
                "RewardShortfallMonitor's 'reward_shortfall')."
            )
        self._task_names = task_names(trainer, owner)
        why = f"reads each task's loss ({self.statistic!r}) for FAMO"
        self.source = find_source(trainer, self.statistic, owner, why)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        k = len(self._task_names)
        if self._restored_names is not None and self._restored_names != self._task_names:
            raise RuntimeError(
                f"F10: FAMOReweighter's checkpoint state was made with tasks "
                f"{self._restored_names}, but the DataModule has {self._task_names}. Resume "
                "with the same task list (same names, same order), or start a new run from the "
                "weights only."
            )
        if not self.logits:  # a fresh run: z uniform, no loss yet
            self.logits, self.exp_avg, self.exp_avg_sq = [0.0] * k, [0.0] * k, [0.0] * k
            self.last_loss = [math.nan] * k
        add_task_layout(trainer, self)
        if self.weights is None:
            self.weights = [1.0] * k
        set_task_loss_weights(pl_module, self.weights)

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        assert self.source is not None, "setup() runs before the first batch"
        self.source.update(trainer, pl_module, batch_idx)
        latest = self.source.latest()
        if latest is not None and latest.step > self.ingested_step:
            self.ingested_step = latest.step
            losses = latest.values.detach().to("cpu", torch.float64)
            self._step(trainer, pl_module, losses, latest.valid.cpu() & torch.isfinite(losses))
        if self.weights is not None:
            names = [metric_name("train", LOSS_WEIGHT, n) for n in self._task_names]
            pl_module.log_dict(
                dict(zip(names, self.weights, strict=True)), on_step=True, on_epoch=False
            )

    def _step(
        self, trainer: Trainer, pl_module: LightningModule, losses: Tensor, valid: Tensor
    ) -> None:
        """One FAMO update from a new measurement of the task losses."""
        if bool((losses[valid] <= 0).any()):
            pairs = zip(self._task_names, losses.tolist(), valid.tolist(), strict=True)
            bad = {n: v for n, v, ok in pairs if ok and v <= 0}
            raise RuntimeError(
                f"F08: FAMOReweighter needs positive task losses (it follows log(loss)); at step "
                f"{trainer.global_step} the losses of {bad} are <= 0. Use it with a loss that is "
                "positive (DPO, SFT's cross-entropy), not a surrogate that can be negative."
            )
        prev = torch.tensor(self.last_loss, dtype=torch.float64)
        both = valid & ~torch.isnan(prev)
        if bool(both.any()):
            ones = torch.ones_like(prev)
            delta = torch.where(
                both,
                torch.log(torch.where(both, prev, ones) / torch.where(both, losses, ones)),
                0.0,
            )
            logits = torch.tensor(self.logits, dtype=torch.float64)
            state = AdamState(
                logits,
                torch.tensor(self.exp_avg, dtype=torch.float64),
                torch.tensor(self.exp_avg_sq, dtype=torch.float64),
            )
            self.num_updates += 1
            state = adam_step(
                state,
                famo_logit_grad(logits, delta),
                self.num_updates,
                lr=self.lr,
                weight_decay=self.gamma,
            )
            self.logits = state.params.tolist()
            self.exp_avg, self.exp_avg_sq = state.exp_avg.tolist(), state.exp_avg_sq.tolist()
        last = torch.where(valid, losses, prev)
        self.last_loss = last.tolist()
        if bool(torch.isnan(last).any()):
            return  # a task without a loss yet: weights stay as they are
        k = len(self._task_names)
        weights = k * famo_weights(torch.tensor(self.logits, dtype=torch.float64), last)
        weights = trainer.strategy.broadcast(weights, src=0)
        self.weights = weights.tolist()
        set_task_loss_weights(pl_module, self.weights)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "task_names": list(self._task_names) or self._restored_names,
            "weights": self.weights,
            "logits": list(self.logits),
            "exp_avg": list(self.exp_avg),
            "exp_avg_sq": list(self.exp_avg_sq),
            "last_loss": list(self.last_loss),
            "num_updates": self.num_updates,
            "ingested_step": self.ingested_step,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        names = state_dict.get("task_names")
        self._restored_names = None if names is None else [str(n) for n in names]
        weights = state_dict.get("weights")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.logits = [float(v) for v in state_dict.get("logits", [])]
        self.exp_avg = [float(v) for v in state_dict.get("exp_avg", [])]
        self.exp_avg_sq = [float(v) for v in state_dict.get("exp_avg_sq", [])]
        self.last_loss = [float(v) for v in state_dict.get("last_loss", [])]
        self.num_updates = int(state_dict.get("num_updates", 0))
        self.ingested_step = int(state_dict.get("ingested_step", -1))
