"""Per-task metric plumbing shared by the modules: sums and counts, reduced, then divided."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gradbal.contracts import trainer_of
from gradbal.metric_names import ACCURACY, LOSS, REWARD, Stage, metric_name
from gradbal.step_metrics import log_step_metrics


def per_task_sums(
    values: Tensor, task_ids: Tensor, num_tasks: int, weights: Tensor | None = None
) -> Tensor:
    """``[2, K]``: per-task sums of ``values [N]`` and counts (sums of ``weights [N]``, default
    1 per sample); fp32, detached."""
    out = torch.zeros(2, num_tasks, dtype=torch.float32, device=values.device)
    out[0].index_add_(0, task_ids, values.detach().float())
    counts = torch.ones_like(values, dtype=torch.float32) if weights is None else weights
    out[1].index_add_(0, task_ids, counts.detach().float())
    return out


def log_task_means(
    module: LightningModule,
    stage: Stage,
    groups: dict[str, Tensor],
    task_ids: Tensor,
    task_names: Sequence[str],
    prog_bar: Sequence[str] = (),
    overall: bool = True,
    weights: Mapping[str, Tensor] | None = None,
) -> None:
    """Log ``<stage>/<group>`` and ``<stage>/<group>/<task>`` means of per-sample values.

    Sums and counts of all groups are reduced across ranks in one collective (sum, then divide:
    never an average of per-rank means). Tasks absent from the global batch are not logged.
    ``overall=False`` skips the across-task ``<stage>/<group>`` value. ``weights``: for the
    groups it names, the count of each sample (e.g. its tokens, with per-sample *sums* of
    per-token values, for a token-weighted mean); a weighted mean whose total weight is 0 is not
    logged.
    """
    k = len(task_names)
    weights = weights or {}
    stacked = torch.stack(
        [per_task_sums(v, task_ids, k, weights.get(name)) for name, v in groups.items()]
    )  # [G, 2, K]
    trainer = trainer_of(module)
    if trainer is not None and trainer.world_size > 1:
        stacked = trainer.strategy.reduce(stacked, reduce_op="sum")
    values: dict[str, Tensor] = {}
    for (group, _), (sums, counts) in zip(groups.items(), stacked, strict=True):
        if overall and counts.sum() > 0:
            values[metric_name(stage, group)] = sums.sum() / counts.sum()
        for t, name in enumerate(task_names):
            if counts[t] > 0:
                values[metric_name(stage, group, name)] = sums[t] / counts[t]
    log_step_metrics(module, values, prog_bar=prog_bar)


def log_task_counts(
    module: LightningModule,
    stage: Stage,
    group: str,
    flags: Tensor,
    task_ids: Tensor,
    task_names: Sequence[str],
) -> None:
    """Log ``<stage>/<group>/<task>``: how many samples of each task in the global batch have
    ``flags`` set (tasks absent from the batch are not logged)."""
    sums = per_task_sums(flags.float(), task_ids, len(task_names))  # [2, K]
    trainer = trainer_of(module)
    if trainer is not None and trainer.world_size > 1:
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
    values = {
        metric_name(stage, group, name): sums[0, t]
        for t, name in enumerate(task_names)
        if sums[1, t] > 0
    }
    log_step_metrics(module, values)


def log_train_loss(module: LightningModule, loss: Tensor) -> None:
    """Log ``train/loss`` for this step: the mean over ranks of each rank's loss (DDP averages
    the ranks' gradients, so that is the loss being optimised), shown in the progress bar."""
    module.log(
        metric_name("train", LOSS),
        loss.detach(),
        on_step=True,
        on_epoch=False,
        prog_bar=True,
        sync_dist=True,
    )


class TaskAccuracy(nn.Module):
    """Validation accuracy and reward per task as torchmetrics means (correct under DDP).

    Logs ``<stage>/accuracy/<task>``, ``<stage>/reward/<task>`` and ``<stage>/accuracy``, the
    unweighted mean over tasks (every task counts the same, whatever its size).
    """

    def __init__(self, task_names: Sequence[str]):
        super().__init__()
        self.task_names = list(task_names)
        self.accuracy = nn.ModuleDict({n: MeanMetric() for n in self.task_names})
        self.reward = nn.ModuleDict({n: MeanMetric() for n in self.task_names})

    def update(self, task_ids: Tensor, correct: Tensor, rewards: Tensor) -> None:
        for t in task_ids.unique().tolist():
            sel = task_ids == t
            name = self.task_names[t]
            _mean(self.accuracy, name).update(correct[sel].float())
            _mean(self.reward, name).update(rewards[sel].float())

    def log_and_reset(self, module: LightningModule, stage: Stage) -> dict[str, float]:
        seen = torch.tensor(
            [float(_mean(self.accuracy, n).update_count > 0) for n in self.task_names],
            device=module.device,
        )
        trainer = trainer_of(module)
        if trainer is not None and trainer.world_size > 1:
            # one collective on every rank, so no rank waits on a metric another skipped
            seen = trainer.strategy.reduce(seen, reduce_op="sum")
        results: dict[str, float] = {}
        accs = []
        for name, any_rank in zip(self.task_names, seen.tolist(), strict=True):
            if not any_rank:
                continue
            acc, rew = _mean(self.accuracy, name), _mean(self.reward, name)
            a, r = acc.compute(), rew.compute()
            accs.append(a)
            results[metric_name(stage, ACCURACY, name)] = float(a)
            results[metric_name(stage, REWARD, name)] = float(r)
            acc.reset()
            rew.reset()
        if accs:
            results[metric_name(stage, ACCURACY)] = float(torch.stack(accs).mean())
        for name, value in results.items():
            module.log(name, value, on_step=False, on_epoch=True, prog_bar=name.endswith(ACCURACY))
        return results


def _mean(metrics: nn.ModuleDict, name: str) -> MeanMetric:
    metric = metrics[name]
    assert isinstance(metric, MeanMetric)
    return metric
