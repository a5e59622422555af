"""GSA (Guo, Liu & Zhao, CVPR 2023): per-class gradient self-adaptation for online class-incremental learning.

In online class-incremental learning with replay, the logit of a class receives *positive*
cross-entropy gradients from samples of that class (``dL/dz_c = p_c - 1``) and *negative* ones
from every other sample (``dL/dz_c = p_c``); their balance shifts as tasks arrive. GSA keeps,
per class, the running positive and negative gradient masses, turns their ratio into a bounded
weight on the class's samples, and trains ``2 * L_n + L_p``: a class-weighted cross-entropy over
every seen class on a class-balanced replay batch (``L_n``) plus a cross-entropy over the
current task's classes only (``L_p``).

Checked against the official code, ``gydpku/GSA`` ``GSA_CVPR/test_cifar100.py`` (variables
``Category_sum``, ``positive_logits_SUM``, ``negative_logits_SUM``, ``ANT``, ``loss_n``), and
Avalanche's re-implementation ``avalanche/training/supervised/gsa.py``; see
``/work/shared/research/papers.md`` section 3.2. Pure torch: the LightningModule that samples
the batches and keeps the running statistics is ``gradbal.modules.OnlineContinualModule``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["GSALoss", "GSAStats", "gsa_class_stats", "gsa_class_weights", "gsa_loss", "gsa_ratio"]


class GSAStats(NamedTuple):
    """Per-class gradient masses on the logits, summed over samples (detached).

    Add two of them with :meth:`add` to accumulate over a stream.

    Attributes:
        positive: ``[C]`` ``Pos_c = sum_{i: y_i = c} (1 - p_c(x_i))``, the magnitude of the
            positive cross-entropy gradient the samples of class ``c`` put on logit ``c``.
        negative: ``[C]`` ``Neg_c = sum_{i: y_i != c} p_c(x_i)``, the magnitude of the negative
            gradient every other sample puts on logit ``c``.

    Example::

        >>> total = GSAStats(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0]))
        >>> total.add(GSAStats(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0])))
        GSAStats(positive=tensor([1.5000, 1.0000]), negative=tensor([0.5000, 3.0000]))
    """

    positive: Tensor
    negative: Tensor

    def add(self, other: GSAStats) -> GSAStats:
        """The element-wise sum (statistics of the union of the two sample sets)."""
        return GSAStats(self.positive + other.positive, self.negative + other.negative)


class GSALoss(NamedTuple):
    """Output of :func:`gsa_loss`: each sample's additive share of ``2 * L_n + L_p``.

    Attributes:
        cross_task_losses: ``[N]`` ``cross_task_weight * w_{y_i} * nll_i / N`` for the
            class-balanced batch, in the autograd graph; their sum is ``2 * L_n``.
        within_task_losses: ``[M]`` ``nll_j / M`` for the current-task batch, in the graph;
            their sum is ``L_p``.
    """

    cross_task_losses: Tensor
    within_task_losses: Tensor


def gsa_class_stats(logits: Tensor, labels: Tensor) -> GSAStats:
    """One batch's positive and negative gradient mass per class, from detached probabilities.

    With ``p = softmax(logits)``: ``Pos_c = sum_{i: y_i = c} (1 - p_c(x_i))`` and
    ``Neg_c = sum_{i: y_i != c} p_c(x_i)`` (the official code computes ``Pos_c`` as the class
    count minus ``sum p_c`` over the class's samples, the same number). Classes outside the
    softmax (logits ``-inf``) get ``p_c = 0``: no negative mass.

    Args:
        logits: ``[N, C]`` logits over the classes of the softmax (GSA: every seen class).
        labels: ``[N]`` long class indices in ``[0, C)``.

    Returns:
        :class:`GSAStats` with ``[C]`` float32 tensors, no gradient.

    Raises:
        ValueError: If ``logits`` is not 2-D or ``labels`` is not ``[N]``.

    Example::

        >>> # p = [[0.5, 0.5], [0.2, 0.8]], labels [0, 1]
        >>> logits = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
        >>> stats = gsa_class_stats(logits, torch.tensor([0, 1]))
        >>> stats.positive  # [1 - 0.5, 1 - 0.8]
        tensor([0.5000, 0.2000])
        >>> stats.negative  # [p_0 of sample 1, p_1 of sample 0]
        tensor([0.2000, 0.5000])
    """
    _check_logits_labels("gsa_class_stats", logits, labels)
    with torch.no_grad():
        probs = torch.softmax(logits.float(), dim=-1)  # [N, C]
        is_label = torch.nn.functional.one_hot(labels, logits.shape[-1]).bool()  # [N, C]
        positive = torch.where(is_label, 1.0 - probs, 0.0).sum(dim=0)  # [C]
        negative = torch.where(is_label, 0.0, probs).sum(dim=0)  # [C]
    return GSAStats(positive=positive, negative=negative)


def gsa_ratio(stats: GSAStats) -> Tensor:
    """``ANT_c = Pos_c / Neg_c``, and 1 ("balanced") where ``Neg_c = 0``.

    ``Neg_c = 0`` means no sample has pushed logit ``c`` down yet (before the first batch, or a
    class outside every softmax so far); the official code would divide by zero there, and
    the class's weight would then not matter (it has no samples in the batch). Returning 1 keeps
    the ratio finite for logging and gives such a class the neutral weight 1.

    Example::

        >>> gsa_ratio(GSAStats(torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 4.0, 0.0])))
        tensor([2.0000, 0.2500, 1.0000])
    """
    positive, negative = stats
    return torch.where(negative > 0, positive / negative.clamp(min=1e-12), 1.0)  # [C]


def gsa_class_weights(stats: GSAStats, *, batch_in_task: int, warmup_batches: int = 5) -> Tensor:
    """GSA's per-class loss weight ``w_c = 2 / (1 + exp(1 - ANT_c)) = 2 * sigmoid(ANT_c - 1)``.

    ``w_c = 1`` when class ``c``'s positive and negative gradient masses balance (``ANT_c = 1``),
    above 1 (up to 2) when its positive mass dominates, below 1 (down to ``2 sigmoid(-1) ~
    0.538``) when its negative mass dominates. During the first ``warmup_batches`` stream
    batches of every task all weights are 1 (official code: ``if batch_idx < 5: ANT = 1``).

    Args:
        stats: the running statistics accumulated over the stream so far, this batch included.
        batch_in_task: index of the current stream batch within its task, from 0.
        warmup_batches: how many first batches of each task use weight 1, >= 0.

    Returns:
        ``[C]`` float32 weights, no gradient.

    Raises:
        ValueError: If ``batch_in_task`` or ``warmup_batches`` is negative.

    Example::

        >>> stats = GSAStats(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 4.0]))
        >>> gsa_class_weights(stats, batch_in_task=5)  # ANT = [1, 2, 0.25]
        tensor([1.0000, 1.4621, 0.6416])
        >>> gsa_class_weights(stats, batch_in_task=4)  # still warming up
        tensor([1., 1., 1.])
    """
    if batch_in_task < 0 or warmup_batches < 0:
        raise ValueError(
            f"gsa_class_weights: batch_in_task and warmup_batches must be >= 0. Got "
            f"batch_in_task={batch_in_task!r}, warmup_batches={warmup_batches!r}."
        )
    if batch_in_task < warmup_batches:
        return torch.ones_like(stats.positive, dtype=torch.float32)
    return 2.0 * torch.sigmoid(gsa_ratio(stats).float() - 1.0)  # [C]


def gsa_loss(
    cross_task_logits: Tensor,
    cross_task_labels: Tensor,
    within_task_logits: Tensor,
    within_task_labels: Tensor,
    class_weights: Tensor,
    *,
    cross_task_weight: float = 2.0,
) -> GSALoss:
    r"""GSA's objective ``cross_task_weight * L_n + L_p``, as per-sample shares.

    ``L_n = -(1/N) sum_i w_{y_i} log p_{y_i}(x_i)``, with the softmax over every seen class, on
    the class-balanced batch (replayed old-task samples plus current-task samples);
    ``L_p = -(1/M) sum_j log q_{y_j}(x_j)``, with the softmax ``q`` over the current task's
    classes only, on the current-task batch, so new samples put no negative gradient on old
    logits. Official code: ``loss = 2 * loss_n + 1 * F.cross_entropy(pred_y_new, y_new)``.
    An empty cross-task batch (``N = 0``: nothing replayed yet) gives ``L_p`` alone, as the
    official code does before the buffer holds anything.

    Args:
        cross_task_logits: ``[N, C]`` logits of the class-balanced batch over all classes
            (unseen classes masked to ``-inf``).
        cross_task_labels: ``[N]`` class indices in ``[0, C)``.
        within_task_logits: ``[M, K]`` logits of the current-task batch restricted to the
            current task's ``K`` classes.
        within_task_labels: ``[M]`` indices in ``[0, K)`` (position in the current task).
        class_weights: ``[C]`` GSA weights from :func:`gsa_class_weights`; treated as constants.
        cross_task_weight: the factor on ``L_n`` (2 in the paper's code), >= 0.

    Returns:
        :class:`GSALoss`; ``cross_task_losses.sum() + within_task_losses.sum()`` is the loss.

    Raises:
        ValueError: On malformed shapes, ``class_weights`` not ``[C]``, a negative
            ``cross_task_weight``, or an empty current-task batch.

    Example::

        >>> log = torch.log
        >>> cross = log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
        >>> within = log(torch.tensor([[0.5, 0.5]]))
        >>> out = gsa_loss(cross, torch.tensor([0, 2]), within, torch.tensor([1]),
        ...                torch.tensor([1.0, 1.0, 0.5]))
        >>> out.cross_task_losses  # 2 * [1.0 * log 2, 0.5 * log 2] / 2
        tensor([0.6931, 0.3466])
        >>> out.within_task_losses  # log 2 / 1
        tensor([0.6931])
    """
    _check_logits_labels("gsa_loss (cross-task)", cross_task_logits, cross_task_labels)
    _check_logits_labels("gsa_loss (within-task)", within_task_logits, within_task_labels)
    num_classes = cross_task_logits.shape[-1]
    if class_weights.shape != (num_classes,):
        raise ValueError(
            f"gsa_loss: class_weights must be [C] = [{num_classes}], one weight per logit of "
            f"cross_task_logits. Got shape {tuple(class_weights.shape)}."
        )
    if not cross_task_weight >= 0:
        raise ValueError(f"gsa_loss: cross_task_weight must be >= 0. Got {cross_task_weight!r}.")
    if within_task_logits.shape[0] == 0:
        raise ValueError(
            "gsa_loss: the current-task batch is empty; it always holds at least the incoming "
            "stream batch. Pass the stream batch's logits as within_task_logits."
        )
    ce = torch.nn.functional.cross_entropy
    n = max(cross_task_logits.shape[0], 1)
    cross_nll = ce(cross_task_logits, cross_task_labels, reduction="none")  # [N]
    weights = class_weights.detach().to(cross_nll.dtype)[cross_task_labels]  # [N]
    cross_task_losses = cross_task_weight * weights * cross_nll / n  # [N]
    within_nll = ce(within_task_logits, within_task_labels, reduction="none")  # [M]
    within_task_losses = within_nll / within_task_logits.shape[0]  # [M]
    return GSALoss(cross_task_losses=cross_task_losses, within_task_losses=within_task_losses)


def _check_logits_labels(owner: str, logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{owner}: logits must be [N, C] and labels [N]. Got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}."
        )
