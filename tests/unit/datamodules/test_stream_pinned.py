"""The draws of a seeded MultiTaskDataModule, pinned: a change to the stream's bookkeeping must
not change which prompts a seed gives.

The constants were printed by the code below on main *before* the mixture moved into
``TaskStream`` (commit 26bf57d), so a behaviour change of the redesign fails here.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

from gradbal.datamodules import MultiTaskDataModule
from gradbal.tasks import Addition, Reverse, Sort

Drawn = list[tuple[int, list[int], list[str]]]

PLAIN_TASKS = [
    [0, 1, 1, 1], [0, 0, 0, 0], [1, 0, 2, 1], [2, 2, 1, 0], [2, 1, 2, 2],
    [2, 2, 2, 2], [2, 2, 2, 2], [0, 2, 2, 2], [1, 0, 2, 2], [2, 2, 2, 1],
]  # fmt: skip
MEASURED_TASKS = [
    [0, 1, 1, 1], [1, 2, 0, 0], [0, 2, 1, 1], [2, 1, 0, 2], [1, 2, 2, 2],
    [2, 2, 1, 0], [2, 2, 0, 2], [2, 2, 1, 0], [2, 2, 2, 2], [0, 1, 2, 2],
]  # fmt: skip
DDP_TASKS = [
    [
        [0, 1, 1, 1], [1, 0, 2, 1], [2, 0, 2, 0], [2, 2, 2, 2], [1, 0, 2, 2],
        [2, 2, 2, 1], [2, 2, 2, 2], [2, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2],
    ],
    [
        [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 1], [0, 2, 2, 2], [2, 2, 2, 1],
        [1, 2, 1, 2], [2, 2, 2, 2], [2, 2, 2, 1], [2, 2, 2, 2], [2, 2, 2, 2],
    ],
]  # fmt: skip
RESUMED_TASKS = PLAIN_TASKS[:8]  # batch 2 was drawn before the change, as in the plain run
RESUMED_DIGEST = "c72e9c271a6bd10f"


def make(rank: int = 0, world: int = 1) -> MultiTaskDataModule:
    tasks = [Addition(n_train=13, n_val=2), Reverse(n_train=9, n_val=2), Sort(n_train=7, n_val=2)]
    dm = MultiTaskDataModule(
        tasks,  # type: ignore[arg-type]
        batch_size=4,
        steps_per_epoch=4,
        seed=11,
        sampling_probs={"addition": 0.6, "reverse": 0.3, "sort": 0.1},
    )
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, accumulate_grad_batches=1)  # type: ignore[assignment]
    dm.setup("fit")
    return dm


def run(dm: MultiTaskDataModule, n: int = 10, switch_at: int | None = 3) -> Drawn:
    """``n`` batches as Lightning hands them to training (several epochs of 4); the mixture
    changes after batch ``switch_at``."""
    out: Drawn = []
    while len(out) < n:
        for b in dm.train_dataloader():
            dm.on_before_batch_transfer(b, 0)
            out.append((b["stream_step"], b["task_id"].tolist(), b["prompt"]))
            if len(out) == switch_at:
                dm.set_sampling_probs([0.05, 0.15, 0.8])
            if len(out) == n:
                break
    return out


def digest(x: Any) -> str:
    return hashlib.sha256(json.dumps(x).encode()).hexdigest()[:16]


def test_a_seed_gives_the_pinned_batches() -> None:
    drawn = run(make())
    assert [t for _, t, _ in drawn] == PLAIN_TASKS
    assert [s for s, _, _ in drawn] == list(range(10))
    assert digest(drawn) == "6bb9abf1fb9d27b0"  # the rows (prompts) as well as the tasks


def test_measured_step_coverage_gives_the_pinned_batches() -> None:
    dm = make()
    dm.set_measured_steps(every_n_steps=2, min_groups_per_task=1)
    drawn = run(dm)
    assert [t for _, t, _ in drawn] == MEASURED_TASKS
    assert digest(drawn) == "b083731624550ca8"


def test_ddp_ranks_get_the_pinned_slices() -> None:
    ranks = [run(make(rank=r, world=2)) for r in (0, 1)]
    assert [[t for _, t, _ in drawn] for drawn in ranks] == DDP_TASKS
    assert digest(ranks) == "0806eff573f8694f"


def test_extra_prompts_are_the_pinned_ones() -> None:
    dm = make()
    dm.set_sampling_probs({"addition": 1, "reverse": 2, "sort": 3})
    extra = dm.draw_prompts(6, seed=5)
    assert extra["task_id"].tolist() == [2, 1, 1, 1, 1, 2]
    assert digest(extra["prompt"]) == "ccde453767db8d2a"
    assert dm.sampling_probs == [1 / 6, 1 / 3, 1 / 2]
    assert make().sampling_probs == [0.6000000000000001, 0.30000000000000004, 0.10000000000000002]


def test_a_restored_stream_continues_the_pinned_batches() -> None:
    """Lightning's order: batch ``i + 1`` is drawn (prefetched) before batch ``i`` is trained
    on; the mixture changes at the end of batch 1, a checkpoint is saved, and the run resumes
    from it: the prefetched batch (drawn with the old mixture) comes first, unchanged."""
    dm = make()
    it = iter(dm.train_dataloader())
    head: Drawn = []
    ahead = next(it)
    for _ in range(2):
        b, ahead = dm.on_before_batch_transfer(ahead, 0), next(it)
        head.append((b["stream_step"], b["task_id"].tolist(), b["prompt"]))
    dm.set_sampling_probs([0.05, 0.15, 0.8])
    state = dm.state_dict()
    uninterrupted = [(ahead["stream_step"], ahead["task_id"].tolist(), ahead["prompt"])]
    uninterrupted += [(b["stream_step"], b["task_id"].tolist(), b["prompt"]) for b in it]

    resumed = make()
    resumed.load_state_dict(state)
    tail = run(resumed, n=6, switch_at=None)
    assert tail[:2] == uninterrupted
    assert [t for _, t, _ in head + tail] == RESUMED_TASKS
    assert digest(head + tail) == RESUMED_DIGEST
    assert resumed.sampling_probs == dm.sampling_probs
