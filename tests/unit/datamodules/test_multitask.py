"""MultiTaskDataModule: batches, probabilities, DDP slicing, validation coverage, state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gradbal.datamodules import MultiTaskDataModule
from gradbal.tasks import Addition, Reverse, Sort


def make_dm(**kwargs: object) -> MultiTaskDataModule:
    tasks = [Addition(n_train=40, n_val=6), Reverse(n_train=40, n_val=5), Sort(n_train=40, n_val=4)]
    dm = MultiTaskDataModule(tasks, **{"batch_size": 4, "steps_per_epoch": 3, **kwargs})  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def test_batch_layout_and_task_ids_match_prompts() -> None:
    dm = make_dm()
    batch = next(iter(dm.train_dataloader()))
    assert batch["task_id"].dtype == torch.long and len(batch["prompt"]) == 4
    keyword = {0: "add ", 1: "rev ", 2: "sort "}
    for t, prompt in zip(batch["task_id"].tolist(), batch["prompt"], strict=True):
        assert prompt.startswith(keyword[t])


def test_epoch_has_steps_per_epoch_batches() -> None:
    dm = make_dm()
    assert len(list(dm.train_dataloader())) == 3
    assert len(list(dm.train_dataloader())) == 3


def test_set_sampling_probs_changes_the_mixture() -> None:
    dm = make_dm(sampling_probs={"addition": 1, "reverse": 0, "sort": 0})
    assert dm.sampling_probs == [1.0, 0.0, 0.0]
    first = next(iter(dm.train_dataloader()))
    assert set(first["task_id"].tolist()) == {0}
    dm.set_sampling_probs(torch.tensor([0.0, 0.0, 2.0]))
    assert dm.sampling_probs == [0.0, 0.0, 1.0]
    later = next(iter(dm.train_dataloader()))
    assert set(later["task_id"].tolist()) == {2}


def test_measured_step_coverage_never_samples_a_task_with_probability_zero() -> None:
    """0 means "never sample this task", also in the steps a gradient monitor measures."""
    dm = make_dm(sampling_probs={"addition": 1, "reverse": 0, "sort": 0.01}, steps_per_epoch=6)
    dm.set_measured_steps(every_n_steps=1, min_groups_per_task=2)  # every step is measured
    batches = list(dm.train_dataloader())
    assert all(1 not in b["task_id"].tolist() for b in batches)
    assert all(b["task_id"].tolist().count(2) >= 2 for b in batches)  # the rare task is covered


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        ({"addition": 1, "revers": 1, "sort": 1}, r"unknown \['revers'\], missing \['reverse'\]"),
        ([1.0, -1.0, 1.0], "non-negative"),
        ([float("nan"), 1.0, 1.0], "finite"),
        ([0, 0, 0], "positive sum"),
        ([1.0, 1.0], "one value per task"),
    ],
)
def test_bad_sampling_probs_raise(probs: object, match: str) -> None:
    dm = make_dm()
    with pytest.raises(ValueError, match=match):
        dm.set_sampling_probs(probs)  # type: ignore[arg-type]
    assert dm.sampling_probs == pytest.approx([1 / 3] * 3)  # unchanged after a refused update


def test_duplicate_task_names_and_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match=r"unique.*\['addition'\]"):
        MultiTaskDataModule([Addition(n_train=5, n_val=2), Addition(n_train=5, n_val=2)])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        MultiTaskDataModule([Addition(n_train=5, n_val=2)], batch_size=0)
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskDataModule([])


def test_ddp_ranks_get_disjoint_slices_of_one_global_batch() -> None:
    batches = []
    for rank in (0, 1):
        dm = make_dm(seed=3)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # type: ignore[assignment]
        batches.append(next(iter(dm.train_dataloader())))
    single = make_dm(seed=3, batch_size=8)
    whole = next(iter(single.train_dataloader()))
    assert batches[0]["prompt"] + batches[1]["prompt"] == whole["prompt"]


def test_validation_covers_every_task_whatever_the_probabilities() -> None:
    dm = make_dm(sampling_probs=[1, 0, 0], val_batch_size=5)
    seen = torch.cat([b["task_id"] for b in dm.val_dataloader()])
    assert torch.bincount(seen).tolist() == [6, 5, 4]
    capped = make_dm(max_val_samples_per_task=2)
    seen = torch.cat([b["task_id"] for b in capped.val_dataloader()])
    assert torch.bincount(seen).tolist() == [2, 2, 2]


def test_state_dict_round_trip_replays_undelivered_batches() -> None:
    """Lightning prefetches a batch before the previous one is trained on: a batch drawn but
    never handed to training_step must come first after a restore."""
    dm = make_dm(steps_per_epoch=10)
    it = iter(dm.train_dataloader())
    b0 = next(it)
    dm.on_before_batch_transfer(b0, 0)  # trained on
    next(it)  # prefetched only
    state = dm.state_dict()
    expected = [next(it)["prompt"] for _ in range(3)]

    fresh = make_dm(steps_per_epoch=10)
    fresh.load_state_dict(state)
    got = [trained(fresh, b)["prompt"] for b in fresh.train_dataloader()]
    assert got[1:4] == expected
    assert len(got) == 9  # the resumed epoch has only what the interrupted one had left
    assert len([trained(fresh, b) for b in fresh.train_dataloader()]) == 10  # the next is whole


def trained(dm: MultiTaskDataModule, batch: dict) -> dict:
    """What Lightning does with each batch it trains on."""
    return dm.on_before_batch_transfer(batch, 0)


def test_restore_with_a_different_task_list_is_refused() -> None:
    state = make_dm().state_dict()
    other = MultiTaskDataModule([Addition(n_train=40, n_val=6), Reverse(n_train=40, n_val=5)])
    with pytest.raises(ValueError, match=r"made with tasks \['addition', 'reverse', 'sort'\]"):
        other.load_state_dict(state)
