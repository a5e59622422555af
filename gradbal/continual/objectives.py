"""The online continual-learning objectives (FineTune, ER, GSA) that OnlineContinualModule runs.

Each is a small class chosen in YAML by ``class_path``; the math lives in
``gradbal/objectives/gsa.py``, these classes only draw replay samples and call it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from gradbal.continual.replay_buffer import ReservoirBuffer
from gradbal.objectives.gsa import GSAStats, gsa_class_stats, gsa_class_weights, gsa_loss, gsa_ratio

__all__ = ["ER", "GSA", "ContinualLoss", "ContinualObjective", "ContinualStep", "FineTune"]


class ContinualStep(NamedTuple):
    """What an objective sees for one incoming stream batch.

    Attributes:
        x: ``[B, F]`` the stream batch's inputs (all of one task).
        y: ``[B]`` their class labels.
        task: the batch's task index.
        task_classes: ``[K]`` long, the current task's classes.
        batch_in_task: index of this batch within its task, from 0.
        buffer: the replay buffer, before this batch is added to it.
        logits: the network, ``[N, F] -> [N, C]``, with classes of tasks not yet started
            masked to ``-inf`` (the expanding head of class-incremental learning).
    """

    x: Tensor
    y: Tensor
    task: int
    task_classes: Tensor
    batch_in_task: int
    buffer: ReservoirBuffer
    logits: Callable[[Tensor], Tensor]


class ContinualLoss(NamedTuple):
    """An objective's output: per-row loss shares and diagnostics.

    Attributes:
        losses: ``[N]`` each row's additive share of the step's loss, in the graph.
        task_ids: ``[N]`` long, each row's task (replayed samples keep their own).
        diagnostics: detached values to log: 0-d as ``train/<name>``, ``[C]`` per class as
            ``train/<name>/class_<c>`` (classes seen so far).
        group_ids: ``[N]`` long, equal for rows that are the same sample (GSA forwards
            current-task samples once per loss term); ``None``: every row is its own sample.
    """

    losses: Tensor
    task_ids: Tensor
    diagnostics: dict[str, Tensor]
    group_ids: Tensor | None = None


class ContinualObjective(ABC):
    """What one stream batch trains on (which replay, which loss); YAML picks the subclass.

    Subclasses take scalars in ``__init__``; running state that changes training (GSA's
    statistics) goes in :meth:`state_dict`, which the module saves in its checkpoints.

    Example::

        >>> objective: ContinualObjective = ER(replay_batch_size=10)
        >>> objective
        ER(replay_batch_size=10)
    """

    @abstractmethod
    def __call__(self, step: ContinualStep) -> ContinualLoss:
        """Return the step's per-sample losses."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Running state (plain values, CPU tensors); none by default."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; nothing to restore by default."""
        del state_dict


class FineTune(ContinualObjective):
    """Plain fine-tuning on the stream: cross-entropy over the seen classes, no replay.

    The lower baseline: the buffer is never read, so old classes are forgotten.

    Example::

        >>> FineTune()
        FineTune()
    """

    def __call__(self, step: ContinualStep) -> ContinualLoss:
        losses = _cross_entropy_shares(step.logits(step.x), step.y)
        return ContinualLoss(losses, torch.full_like(step.y, step.task), {})

    def __repr__(self) -> str:
        return "FineTune()"


class ER(ContinualObjective):
    """Experience replay (Chaudhry et al. 2019, arXiv:1902.10486): stream batch + random replay.

    Each step trains on the stream batch concatenated with ``replay_batch_size`` samples drawn
    uniformly from the buffer (any task), with one cross-entropy over the seen classes.

    Args:
        replay_batch_size: replayed samples per step, >= 1. 10 (the stream batch) is ER's
            original mix; 64 matches GSA's cross-task batch and the shared setting of the
            reproductions in papers.md section 3.4.

    Example::

        >>> ER(replay_batch_size=64)
        ER(replay_batch_size=64)
    """

    def __init__(self, replay_batch_size: int = 64) -> None:
        if replay_batch_size < 1:
            raise ValueError(
                f"ER: replay_batch_size must be >= 1, got {replay_batch_size!r}. For no "
                "replay use FineTune."
            )
        self.replay_batch_size = replay_batch_size

    def __call__(self, step: ContinualStep) -> ContinualLoss:
        replay = _draw(step, self.replay_batch_size, tasks=None)
        x = torch.cat([step.x, replay.x])  # [B + R, F]
        y = torch.cat([step.y, replay.y])  # [B + R]
        task_ids = torch.cat([torch.full_like(step.y, step.task), replay.task_ids])  # [B + R]
        return ContinualLoss(_cross_entropy_shares(step.logits(x), y), task_ids, {})

    def __repr__(self) -> str:
        return f"ER(replay_batch_size={self.replay_batch_size})"


class GSA(ContinualObjective):
    """GSA (Guo et al., CVPR 2023): ``2 L_n + L_p`` with per-class gradient self-adaptation.

    Per stream batch, as in the official code (papers.md section 3.2):

    1. current-task batch: the stream batch plus ``current_task_replay`` buffered samples of
       the current task; ``L_p`` = cross-entropy over the current task's classes only;
    2. class-balanced batch of ``cross_task_batch_size``: a share ``1 - r`` of buffered samples
       of earlier tasks and ``r`` of the current-task batch, ``r`` = (classes of the current task
       observed so far) / (classes observed so far);
    3. add its per-class positive/negative gradient masses (softmax over the seen classes,
       detached) to running totals kept over the whole stream, then weight each class by
       ``2 sigmoid(Pos_c / Neg_c - 1)`` (1 for the first ``warmup_batches`` of each task);
    4. ``L_n`` = class-weighted cross-entropy over the seen classes on the balanced batch; the
       loss is ``cross_task_weight * L_n + L_p`` (only ``L_p`` while the buffer is empty).

    Not reproduced: the official script's flip / crop augmentation (it targets images; this
    module takes any feature vectors). Its two forward passes (balanced batch, current-task
    batch) are one pass over both batches here: identical without batch norm or dropout.

    Args:
        cross_task_batch_size: size of the class-balanced batch (64 in the paper's code).
        current_task_replay: buffered current-task samples added to the stream batch (22).
        warmup_batches: first batches of each task trained with all weights 1 (5).
        cross_task_weight: the factor on ``L_n`` (2).

    Example::

        >>> GSA()
        GSA(cross_task_batch_size=64, current_task_replay=22, warmup_batches=5, cross_task_weight=2.0)
    """

    def __init__(
        self,
        cross_task_batch_size: int = 64,
        current_task_replay: int = 22,
        warmup_batches: int = 5,
        cross_task_weight: float = 2.0,
    ) -> None:
        for name, value in (
            ("cross_task_batch_size", cross_task_batch_size),
            ("current_task_replay", current_task_replay),
            ("warmup_batches", warmup_batches),
            ("cross_task_weight", cross_task_weight),
        ):
            if value < 0:
                raise ValueError(f"GSA: {name} must be >= 0, got {value!r}.")
        self.cross_task_batch_size = cross_task_batch_size
        self.current_task_replay = current_task_replay
        self.warmup_batches = warmup_batches
        self.cross_task_weight = cross_task_weight
        self._stats: GSAStats | None = None  # [C] running totals over the stream
        self._observed: set[int] = set()  # classes observed in the stream so far
        self._observed_in_task: set[int] = set()
        self._task = -1

    def __call__(self, step: ContinualStep) -> ContinualLoss:
        if step.task != self._task:
            self._task, self._observed_in_task = step.task, set()
        labels = set(step.y.tolist())
        self._observed |= labels
        self._observed_in_task |= labels
        current = _draw(step, self.current_task_replay, tasks=[step.task])
        x_cur = torch.cat([step.x, current.x])  # [M, F]
        y_cur = torch.cat([step.y, current.y])  # [M]
        task_cur = torch.full_like(y_cur, step.task)  # [M]
        rate = len(self._observed_in_task) / len(self._observed)
        num_new = int(self.cross_task_batch_size * rate) if len(step.buffer) else 0
        num_old = int(self.cross_task_batch_size * (1 - rate)) if len(step.buffer) else 0
        past = _draw(step, num_old, tasks=range(step.task))
        x_cross = torch.cat([x_cur[:num_new], past.x])  # [N, F]
        y_cross = torch.cat([y_cur[:num_new], past.y])  # [N]
        # One forward, one row per loss term: the current-task rows of the balanced batch are
        # forwarded twice, as in the official code's two passes, so per-task gradient monitors
        # can split the loss by row.
        logits = step.logits(torch.cat([x_cross, x_cur]))  # [N + M, C]
        cross_logits, cur_logits = logits[: len(y_cross)], logits[len(y_cross) :]
        batch_stats = gsa_class_stats(cross_logits, y_cross)
        self._stats = batch_stats if self._stats is None else self._stats.add(batch_stats)
        weights = gsa_class_weights(
            self._stats, batch_in_task=step.batch_in_task, warmup_batches=self.warmup_batches
        ).to(logits.device)  # [C]
        within = (y_cur.unsqueeze(1) == step.task_classes.unsqueeze(0)).float().argmax(1)  # [M]
        out = gsa_loss(
            cross_logits,
            y_cross,
            cur_logits[:, step.task_classes],
            within,
            weights,
            cross_task_weight=self.cross_task_weight,
        )
        losses = torch.cat([out.cross_task_losses, out.within_task_losses])  # [N + M]
        task_ids = torch.cat([task_cur[:num_new], past.task_ids, task_cur])  # [N + M]
        # Cross row i < num_new is current-task sample i, also within row i: one group, so a
        # gradient monitor never treats the two rows as independent samples (nor splits them).
        sample = torch.arange(len(y_cur), device=y_cur.device)  # [M]
        past_ids = len(y_cur) + torch.arange(len(past.y), device=y_cur.device)  # [N - num_new]
        group_ids = torch.cat([sample[:num_new], past_ids, sample])  # [N + M]
        diagnostics = {"gsa_ratio": gsa_ratio(self._stats), "gsa_weight": weights.cpu()}
        return ContinualLoss(losses, task_ids, diagnostics, group_ids)

    def __repr__(self) -> str:
        return (
            f"GSA(cross_task_batch_size={self.cross_task_batch_size}, current_task_replay="
            f"{self.current_task_replay}, warmup_batches={self.warmup_batches}, "
            f"cross_task_weight={self.cross_task_weight})"
        )

    def state_dict(self) -> dict[str, Any]:
        stats = None if self._stats is None else [t.cpu() for t in self._stats]
        return {
            "stats": stats,
            "observed": sorted(self._observed),
            "observed_in_task": sorted(self._observed_in_task),
            "task": self._task,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stats = state_dict.get("stats")
        self._stats = None if stats is None else GSAStats(*stats)
        self._observed = set(state_dict.get("observed", []))
        self._observed_in_task = set(state_dict.get("observed_in_task", []))
        self._task = int(state_dict.get("task", -1))


def _draw(step: ContinualStep, n: int, tasks: Sequence[int] | None) -> _Replay:
    """Up to ``n`` buffered samples of ``tasks`` on the stream batch's device and dtype."""
    sample = step.buffer.sample(n, tasks=tasks)
    x = sample.x if len(sample.y) else step.x.new_zeros((0, *step.x.shape[1:]))
    device = step.x.device
    return _Replay(x.to(device, step.x.dtype), sample.y.to(device), sample.task_ids.to(device))


class _Replay(NamedTuple):
    x: Tensor  # [R, F]
    y: Tensor  # [R]
    task_ids: Tensor  # [R]


def _cross_entropy_shares(logits: Tensor, labels: Tensor) -> Tensor:
    """``[N]`` per-sample cross-entropy divided by ``N``: shares of the batch mean."""
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none") / len(labels)
