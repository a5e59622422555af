"""``SkillGraphWeights``: Skill-it's online mixing over a given graph of which task helps which."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gradbal.weighting.base import TaskWeighting, check_rate, exp_weight_probs


class SkillGraphWeights(TaskWeighting):
    """More samples to the tasks that help the tasks still far from solved, along a task graph.

    Skill-it (Chen, Roberts, Bhatia, Wang, Zhang, Sala, Ré 2023, "Skill-it! A Data-Driven Skills
    Framework for Understanding and Training Language Models", arXiv:2307.14430, Alg. 1, online
    data selection) mixes the training skills by multiplicative weights over a skills graph
    ``A`` (``A_ij > 0``: training on skill ``i`` lowers the loss of skill ``j``; ``A_ii = 1``):
    ``p^{t+1}_i ∝ p^t_i exp(eta sum_j A_ij L_j)``, with ``L_j`` skill ``j``'s validation loss
    (the reference code, ``HazyResearch/skill-it`` ``MWTrainer``, uses ``p^1 exp(eta sum_j A_ij
    sum_{last w rounds} L_j)``). This rule returns ``softmax(eta s / max(s))`` with ``s = A x``
    and ``x`` the statistic it reads (:func:`gradbal.weighting.base.exp_weight_probs`).

    The graph is given by task *name* in YAML: ``graph: {addition: [countdown]}`` says training
    on ``addition`` helps ``countdown`` (``A[addition, countdown] = edge_weight``); every task
    helps itself with weight 1, a task missing from the graph helps only itself, and an empty
    graph is Skill-it's identity graph ("sample the tasks with the highest loss"). The
    consumer resolves the names with :meth:`bind` at ``setup``, which raises if a name is not a
    task of the DataModule.

    Where the state lives (gradbal's design: rules are stateless). Skill-it's running part, the
    product of the ``exp`` factors, is ``exp(eta A sum_t L_t)``: the scheduler's moving average
    of the statistic (``ema``) is a discounted version of that sum (of Skill-it's window ``w``),
    saved in its ``state_dict``, so a resumed run continues the same mixture.

    Reconstructed, not in Skill-it: the discounted sum (the EMA) instead of a window of ``w``
    rounds; ``s`` divided by its largest value, so the rule is scale-invariant like every
    gradbal rule (``eta`` is the log-odds of the task with the largest ``s`` over one with
    ``s = 0``); one ``edge_weight`` for every edge (Skill-it estimates ``A`` or sets 0.5 in its
    synthetic experiments); the statistic: Skill-it reads a validation loss, gradbal a training
    statistic, ``"task_loss"`` (DPO, SFT) or, for GRPO, whose loss is a zero-mean surrogate,
    ``"reward_shortfall"`` (``RewardShortfallMonitor``: how far each task is from solved).

    Args:
        graph: Task name -> the names of the tasks it helps.
        eta: Step size of the multiplicative weights, > 0 (Skill-it's ``eta``).
        edge_weight: ``A_ij`` of every edge ``i -> j`` of the graph, > 0.
        statistic: The per-task statistic read (a loss-like one: larger = further from solved).

    Raises:
        ValueError: On a graph that is not a mapping of names to lists of names, a bad ``eta``
            or ``edge_weight``; at :meth:`bind`, on a name that is not a task.
        RuntimeError: If a rule with a non-empty graph is called before :meth:`bind`.

    Example::

        >>> rule = SkillGraphWeights({"a": ["c"]}, eta=2.0).bind(["a", "b", "c"])
        >>> rule(torch.tensor([0.0, 0.0, 1.0]))  # only c unsolved; a, which helps c, beats b
        tensor([0.2447, 0.0900, 0.6652])
    """

    def __init__(
        self,
        graph: dict[str, list[str]] | None = None,
        eta: float = 1.0,
        edge_weight: float = 0.5,
        statistic: str = "task_loss",
    ):
        graph = {} if graph is None else graph
        if not isinstance(graph, dict) or not all(
            isinstance(k, str)
            and isinstance(v, list | tuple)
            and all(isinstance(n, str) for n in v)
            for k, v in graph.items()
        ):
            raise ValueError(
                "F01: SkillGraphWeights(graph=...) maps each task name to the list of task "
                f"names it helps, e.g. {{'addition': ['countdown']}}. Got {graph!r}."
            )
        check_rate("SkillGraphWeights", "eta", eta)
        if not (edge_weight > 0 and math.isfinite(edge_weight)):
            raise ValueError(
                "F02: SkillGraphWeights needs a finite `edge_weight` > 0 (A_ij of every edge; "
                f"a task helps itself with 1). Got {edge_weight}. Drop an edge from `graph` "
                "instead of giving it weight 0."
            )
        self.graph = {k: list(v) for k, v in graph.items()}  # a copy: never the caller's
        self.eta, self.edge_weight, self.statistic = eta, edge_weight, statistic
        self._names: tuple[str, ...] | None = None
        self._matrix: Tensor | None = None  # [K, K] float64, A_ij, set by bind

    def bind(self, task_names: Sequence[str]) -> SkillGraphWeights:
        """A copy with the graph's ``A`` for these tasks, in this order.

        A bound rule binds again to a subset of its tasks (the measured ones): its ``A``
        restricted to them.

        Raises:
            ValueError: If the graph names a task not in ``task_names`` (a bound rule: if
                ``task_names`` has a task it was not bound to).
        """
        names = [str(n) for n in task_names]
        if self._names is not None:
            unknown = [n for n in names if n not in self._names]
        else:
            mentioned = list(self.graph) + [n for helped in self.graph.values() for n in helped]
            unknown = list(dict.fromkeys(n for n in mentioned if n not in names))
        if unknown:
            raise ValueError(
                f"F03: SkillGraphWeights(graph={self.graph!r}) names tasks {unknown} that are "
                f"not among the DataModule's tasks {list(self._names or names)}. Spell the "
                "graph's names as the tasks under `data:` (trainer.datamodule.task_names), or "
                "drop those edges."
            )
        bound = copy.copy(self)
        if self._names is not None and self._matrix is not None:
            index = torch.tensor([self._names.index(n) for n in names], dtype=torch.long)
            bound._matrix = self._matrix[index][:, index]
        else:
            matrix = torch.eye(len(names), dtype=torch.float64)
            for helper, helped in self.graph.items():
                for name in helped:
                    if name != helper:
                        matrix[names.index(helper), names.index(name)] = self.edge_weight
            bound._matrix = matrix
        bound._names = tuple(names)
        return bound

    def forward(self, stats: Tensor) -> Tensor:
        matrix = self._matrix
        if matrix is None:
            if self.graph:
                raise RuntimeError(
                    f"F04: {self!r} names tasks, so it must be bound to the task order first: "
                    "rule.bind(task_names) (TaskSamplingScheduler and TaskLossReweighter do "
                    "this at setup)."
                )
            matrix = torch.eye(stats.numel(), dtype=torch.float64)
        if matrix.shape[0] != stats.numel():
            raise ValueError(
                f"{self!r} is bound to {len(self._names or ())} tasks {list(self._names or ())}"
                f", but got {stats.numel()} statistics. Bind it to the tasks it is called for."
            )
        return exp_weight_probs(matrix @ stats.double(), self.eta, 0.0)

    def __repr__(self) -> str:
        return (
            f"SkillGraphWeights(graph={self.graph!r}, eta={self.eta}, "
            f"edge_weight={self.edge_weight}, statistic={self.statistic!r})"
        )
