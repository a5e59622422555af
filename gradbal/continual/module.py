"""OnlineContinualModule: online class-incremental learning with replay (fine-tuning, ER, GSA)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from gradbal.continual.objectives import (
    ER,
    GSA,
    ContinualLoss,
    ContinualObjective,
    ContinualStep,
    FineTune,
)
from gradbal.continual.replay_buffer import ReservoirBuffer
from gradbal.contracts import trainer_of
from gradbal.metric_names import ACCURACY, LOSS, Stage, metric_name
from gradbal.nonfinite_loss import NonFiniteLoss, guard_loss
from gradbal.sharding import FSDP2Strategy, shard_for_trainer
from gradbal.task_losses import report_task_losses

__all__ = [
    "ER",
    "GSA",
    "ContinualLoss",
    "ContinualObjective",
    "ContinualStep",
    "FineTune",
    "OnlineContinualModule",
    "forgetting",
]

AVG_ACCURACY = "avg_accuracy"
FORGETTING = "forgetting"


@runtime_checkable
class ClassIncrementalData(Protocol):
    """What the module reads from the DataModule (``ClassIncrementalDataModule`` has it)."""

    task_names: list[str]
    task_classes: list[list[int]]
    num_classes: int
    num_features: int


class OnlineContinualModule(LightningModule):
    """Online class-incremental learning with a replay buffer; the objective is chosen in YAML.

    Every stream batch is trained on once: the objective (:class:`FineTune`, :class:`ER`,
    :class:`GSA`) builds the step's loss from the batch and the replay buffer, then the batch is
    offered to the buffer (reservoir sampling). The classifier's output covers every class; the
    classes of tasks not started yet are masked (``-inf``), which is the expanding head of
    class-incremental learning. Evaluation predicts among all classes seen so far, with no task
    id. After each task (Lightning's validation at the end of the task's epoch) the module
    fills row ``i`` of the accuracy matrix ``a[i][j]`` (accuracy on task ``j``'s test split after
    training task ``i``) and logs the average accuracy over the seen tasks and the forgetting
    ``mean_{j<i} (max_{l<i} a[l][j] - a[i][j])``.

    Every ``training_step`` reports each sample's loss share and task through
    :func:`gradbal.report_task_losses` (replayed samples count for their own task), so
    gradbal's per-task callbacks (``TaskGradNormMonitor``, ...) work on it.

    Logged: ``train/loss``, and per objective diagnostics (GSA: ``train/gsa_ratio/class_<c>``,
    ``train/gsa_weight/class_<c>``); ``val/accuracy/<task>``, ``val/avg_accuracy``,
    ``val/forgetting`` (from the second task on); ``test/accuracy/<task>``,
    ``test/avg_accuracy``.

    Assumptions:
        The DataModule exposes ``task_names``, ``task_classes``, ``num_classes`` and
        ``num_features`` (:class:`~gradbal.datamodules.ClassIncrementalDataModule`) and yields
        batches ``{"x": [B, F], "y": [B], "task_id": [B]}``, each of a single task, tasks in
        order. Single device: the buffer and the stream are not sharded across ranks.

    Args:
        objective: a :class:`ContinualObjective`; copied, so one instance can configure several
            modules.
        optimizer: optimizer factory (GSA's code: Adam, lr 1e-3, betas (0.9, 0.99), weight
            decay 1e-4).
        network: any module mapping ``[N, F]`` to ``[N, num_classes]`` logits; by default an MLP
            with ReLU and ``hidden_sizes``, built in :meth:`setup` from the DataModule's sizes.
        hidden_sizes: hidden widths of the default MLP.
        buffer_size: replay buffer capacity (samples).
        seed: seeds the buffer (reservoir slots and replay draws).
        task_names: filled from ``data.task_names`` by the CLI; checked against the DataModule.
        on_nonfinite_loss: a NaN or infinite loss stops training with a checkpoint of the last
            good state (``stop``) or skips that step with a warning (``skip``).
        sharding: how ``configure_model`` shards the network with FSDP2 when the Trainer's
            strategy is ``ModelParallelStrategy`` (default: the network as one unit); ignored
            under other strategies.

    Raises:
        TypeError: If ``objective`` is not a :class:`ContinualObjective`.
        ValueError: On a non-positive ``buffer_size`` or hidden width.
        RuntimeError: In :meth:`setup`, without a DataModule as in Assumptions.

    Attributes:
        buffer: the :class:`~gradbal.datamodules.ReservoirBuffer` (in checkpoints).
        accuracy_matrix: ``[T, T]`` float, ``a[i][j]``; NaN where not evaluated (in
            checkpoints).

    Example::

        >>> module = OnlineContinualModule(ER(replay_batch_size=10), buffer_size=200)
        >>> module.objective, module.buffer
        (ER(replay_batch_size=10), ReservoirBuffer(capacity=200, seed=0))
    """

    def __init__(
        self,
        objective: ContinualObjective,
        optimizer: OptimizerCallable = torch.optim.Adam,
        network: nn.Module | None = None,
        hidden_sizes: Sequence[int] = (100, 100),
        buffer_size: int = 200,
        seed: int = 0,
        task_names: list[str] | None = None,
        on_nonfinite_loss: NonFiniteLoss = "stop",
        sharding: FSDP2Strategy | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(objective, ContinualObjective):
            raise TypeError(
                f"objective must be a ContinualObjective (FineTune, ER, GSA), got "
                f"{type(objective).__name__}. In YAML: objective: {{class_path: "
                "gradbal.continual.GSA}."
            )
        if buffer_size < 1 or any(h < 1 for h in hidden_sizes):
            raise ValueError(
                f"buffer_size and hidden_sizes must be >= 1, got buffer_size={buffer_size!r}, "
                f"hidden_sizes={list(hidden_sizes)!r}."
            )
        self.save_hyperparameters(ignore=["objective", "optimizer", "network", "sharding"])
        self.objective = copy.deepcopy(objective)
        self.optimizer_factory = optimizer
        self.network = network
        self.sharding = sharding
        self.hidden_sizes = list(hidden_sizes)
        self.buffer = ReservoirBuffer(buffer_size, seed=seed)
        self.task_names = task_names
        self.on_nonfinite_loss: NonFiniteLoss = on_nonfinite_loss
        self.task_classes: list[Tensor] = []
        self.num_classes = 0
        self.accuracy_matrix = torch.empty(0, 0)
        self._task = -1  # the task being (or last) trained
        self._batch_in_task = 0
        self._eval_counts = torch.zeros(2, 0)  # [correct, total] per task

    @override
    def setup(self, stage: str) -> None:
        trainer = trainer_of(self)
        dm = trainer.datamodule if trainer is not None else None  # type: ignore[attr-defined]
        if not isinstance(dm, ClassIncrementalData):
            raise RuntimeError(
                "OnlineContinualModule needs a DataModule with task_names, task_classes, "
                f"num_classes and num_features; got {type(dm).__name__}. Use "
                "gradbal.datamodules.ClassIncrementalDataModule."
            )
        if self.task_names is not None and list(self.task_names) != list(dm.task_names):
            raise RuntimeError(
                f"task_names {self.task_names} differ from the DataModule's {dm.task_names}. "
                "Leave task_names unset: the CLI links it from data.task_names."
            )
        self.task_names = list(dm.task_names)
        self.task_classes = [torch.tensor(c, dtype=torch.long) for c in dm.task_classes]
        self.num_classes = dm.num_classes
        if self.network is None:
            self.network = _mlp(dm.num_features, self.hidden_sizes, dm.num_classes)
        if self.accuracy_matrix.numel() == 0:
            t = len(self.task_names)
            self.accuracy_matrix = torch.full((t, t), float("nan"))

    @override
    def configure_model(self) -> None:
        # Lightning calls this after `setup`, which builds the default network.
        if self.network is not None:
            shard_for_trainer(self, self.network, self.sharding)

    @override
    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(self.parameters())

    @override
    def forward(self, x: Tensor) -> Tensor:
        """``[N, F] -> [N, C]`` logits over every class (nothing masked)."""
        assert self.network is not None
        return self.network(x)

    def seen_logits(self, x: Tensor) -> Tensor:
        """``[N, C]`` logits with the classes of tasks not started yet set to ``-inf``."""
        logits = self(x)  # [N, C]
        if logits.shape[-1] != self.num_classes:
            raise RuntimeError(
                f"The network outputs {logits.shape[-1]} logits but the data has "
                f"{self.num_classes} classes. Give the network num_classes outputs."
            )
        seen = torch.zeros(self.num_classes, dtype=torch.bool, device=logits.device)
        for classes in self.task_classes[: self._task + 1]:
            seen[classes.to(logits.device)] = True
        return logits.masked_fill(~seen, float("-inf"))

    def _start_task(self, task: int) -> None:
        if task <= self._task:
            raise RuntimeError(
                f"The stream went back from task {self._task} to task {task}; online "
                "class-incremental learning needs the tasks in order, each once."
            )
        self._task, self._batch_in_task = task, 0

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        x, y = batch["x"], batch["y"]
        task = int(batch["task_id"][0])
        if task != self._task:
            self._start_task(task)
        step = ContinualStep(
            x=x,
            y=y,
            task=task,
            task_classes=self.task_classes[task].to(self.device),
            batch_in_task=self._batch_in_task,
            buffer=self.buffer,
            logits=self.seen_logits,
        )
        out = self.objective(step)
        loss = report_task_losses(self, out.losses, out.task_ids, out.group_ids)
        self.log(metric_name("train", LOSS), loss.detach(), prog_bar=True, batch_size=len(y))
        self._log_diagnostics(out.diagnostics)
        self.buffer.add(x, y, task)
        self._batch_in_task += 1
        return guard_loss(self, loss, self.on_nonfinite_loss)

    def _log_diagnostics(self, diagnostics: dict[str, Tensor]) -> None:
        seen = torch.cat(self.task_classes[: self._task + 1]).tolist()
        for name, value in diagnostics.items():
            if value.dim() == 0:
                self.log(metric_name("train", name), value, on_step=True, on_epoch=False)
                continue
            values = value.detach().cpu()
            for c in seen:
                self.log(
                    metric_name("train", name, f"class_{c}"),
                    values[c],
                    on_step=True,
                    on_epoch=False,
                )

    # ---- evaluation --------------------------------------------------------------------------

    def _reset_counts(self) -> None:
        self._eval_counts = torch.zeros(2, len(self.task_classes), device=self.device)

    def _count(self, batch: dict[str, Any]) -> None:
        correct = (self.seen_logits(batch["x"]).argmax(-1) == batch["y"]).float()  # [N]
        self._eval_counts[0].index_add_(0, batch["task_id"], correct)
        self._eval_counts[1].index_add_(0, batch["task_id"], torch.ones_like(correct))

    def _task_accuracies(self) -> Tensor:
        counts = self._eval_counts
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")  # sums, then divide
        correct, total = counts.cpu()
        return torch.where(total > 0, correct / total.clamp(min=1), float("nan"))  # [T]

    @override
    def on_validation_epoch_start(self) -> None:
        self._reset_counts()

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._count(batch)

    @override
    def on_validation_epoch_end(self) -> None:
        if self._task < 0 or self.trainer.sanity_checking:
            return  # nothing trained yet
        row = self._task
        self.accuracy_matrix[row, : row + 1] = self._task_accuracies()[: row + 1]
        self._log_accuracies("val", self.accuracy_matrix[row, : row + 1])
        if row > 0:
            self.log(metric_name("val", FORGETTING), forgetting(self.accuracy_matrix[: row + 1]))

    @override
    def on_test_epoch_start(self) -> None:
        self._reset_counts()

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._count(batch)

    @override
    def on_test_epoch_end(self) -> None:
        self._log_accuracies("test", self._task_accuracies()[: self._task + 1])

    def _log_accuracies(self, stage: Stage, accuracies: Tensor) -> None:
        assert self.task_names is not None
        for name, value in zip(self.task_names, accuracies.tolist(), strict=False):
            self.log(metric_name(stage, ACCURACY, name), value)
        self.log(metric_name(stage, AVG_ACCURACY), accuracies.mean().item(), prog_bar=True)

    # ---- checkpointing -------------------------------------------------------------------------

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["online_continual"] = {
            "buffer": self.buffer.state_dict(),
            "objective": self.objective.state_dict(),
            "task": self._task,
            "batch_in_task": self._batch_in_task,
            "accuracy_matrix": self.accuracy_matrix.clone(),
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("online_continual")
        if state is None:
            return
        self._apply_state(state)  # nothing here needs setup() to have run

    def _apply_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.objective.load_state_dict(state["objective"])
        self._task = int(state["task"])
        self._batch_in_task = int(state["batch_in_task"])
        self.accuracy_matrix = state["accuracy_matrix"].clone()


def forgetting(accuracy_matrix: Tensor) -> float:
    """Average forgetting after the last row's task ``T``: ``mean_{j<T} max_{i<T} a[i][j] - a[T][j]``.

    Args:
        accuracy_matrix: ``[T+1, T+1]`` (or more columns), ``a[i][j]`` = accuracy on task
            ``j`` after training task ``i``; only entries with ``j <= i`` are read.

    Example::

        >>> a = torch.tensor([[0.9, 0.0, 0.0], [0.6, 0.8, 0.0], [0.5, 0.7, 0.9]])
        >>> round(forgetting(a), 4)  # ((0.9 - 0.5) + (0.8 - 0.7)) / 2
        0.25
    """
    last = accuracy_matrix.shape[0] - 1
    if last < 1:
        return 0.0
    drops = [
        float(accuracy_matrix[j:last, j].max() - accuracy_matrix[last, j]) for j in range(last)
    ]
    return sum(drops) / len(drops)


def _mlp(num_features: int, hidden_sizes: Sequence[int], num_classes: int) -> nn.Sequential:
    widths = [num_features, *hidden_sizes]
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))
