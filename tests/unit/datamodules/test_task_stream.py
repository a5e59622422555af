"""TaskStream: the one owner of the mixture (probabilities, sampler, position) and its state."""

from __future__ import annotations

import pytest
import torch

from gradbal.datamodules import MultiTaskDataModule, TaskStream, WeightedTaskSampler
from gradbal.tasks import Addition, Reverse, Sort


def make_dm(**kwargs: object) -> MultiTaskDataModule:
    tasks = [Addition(n_train=20, n_val=2), Reverse(n_train=20, n_val=2), Sort(n_train=20, n_val=2)]
    dm = MultiTaskDataModule(
        tasks,  # type: ignore[arg-type]
        **{"batch_size": 4, "steps_per_epoch": 10, "sampling_probs": [0.5, 0.3, 0.2], **kwargs},  # type: ignore[arg-type]
    )
    dm.setup("fit")
    return dm


def prompts(dm: MultiTaskDataModule, n: int) -> list[list[str]]:
    """The next ``n`` batches as Lightning trains on them (each marked consumed)."""
    out = []
    for batch in dm.train_dataloader():
        out.append(dm.on_before_batch_transfer(batch, 0)["prompt"])
        if len(out) == n:
            break
    return out


def test_the_state_holds_the_probabilities_once() -> None:
    dm = make_dm()
    prompts(dm, 2)
    it = iter(dm.train_dataloader())
    next(it)  # drawn ahead, as Lightning does, not consumed
    state = dm.state_dict()
    assert state.keys() == dm.stream.state_dict().keys()  # the DataModule delegates
    assert state["probs"] == dm.sampling_probs and "probs" not in state["sampler"]
    assert (state["drawn"], state["consumed"], len(state["undelivered"])) == (3, 2, 1)


def test_a_state_in_the_format_from_before_task_stream_continues_the_stream() -> None:
    """Until TaskStream, the sampler's own state repeated the probabilities; the top-level ones
    were applied last, so they win."""
    dm = make_dm()
    prompts(dm, 3)
    dm.set_sampling_probs([0.1, 0.1, 0.8])
    new = dm.state_dict()
    expected = prompts(dm, 4)
    old = {**new, "sampler": {**new["sampler"], "probs": [1.0, 0.0, 0.0]}}

    resumed = make_dm(sampling_probs=None)
    resumed.load_state_dict(old)
    assert resumed.sampling_probs == pytest.approx([0.1, 0.1, 0.8])
    assert prompts(resumed, 4) == expected


def test_a_state_loaded_before_setup_is_reported_and_applied_at_setup() -> None:
    dm = make_dm()
    prompts(dm, 2)
    dm.set_sampling_probs([0.0, 1.0, 0.0])
    state = dm.state_dict()
    expected = prompts(dm, 2)
    fresh = MultiTaskDataModule(
        [Addition(n_train=20, n_val=2), Reverse(n_train=20, n_val=2), Sort(n_train=20, n_val=2)],  # type: ignore[list-item]
        batch_size=4,
        steps_per_epoch=10,
    )
    fresh.load_state_dict(state)  # Lightning restores after setup; a user may do it before
    assert fresh.sampling_probs == [0.0, 1.0, 0.0]
    fresh.setup("fit")
    assert prompts(fresh, 2) == expected


def test_restored_probabilities_are_kept_bit_for_bit() -> None:
    """Normalising saved probabilities again can move one by an ulp; they are kept as saved."""
    probs = [0.1, 0.7, 0.2]  # sums to 0.9999999999999999 in float64
    stream = TaskStream(["a", "b", "c"], probs, seed=1)
    stream.start([5, 5, 5])
    saved = stream.state_dict()
    again = TaskStream(["a", "b", "c"], seed=1)
    again.start([5, 5, 5])
    again.load_state_dict(saved)
    assert again.sampling_probs == saved["probs"] == stream.sampling_probs


def test_errors_name_the_real_tasks_and_leave_the_mixture_unchanged() -> None:
    dm = make_dm()
    with pytest.raises(ValueError, match=r"\['addition', 'reverse', 'sort'\]"):
        dm.set_sampling_probs([1.0, -1.0, 1.0])
    assert dm.sampling_probs == pytest.approx([0.5, 0.3, 0.2])
    sampler = WeightedTaskSampler([3, 3], [1.0, 1.0], task_names=["x", "y"])
    with pytest.raises(ValueError, match=r"for tasks \['x', 'y'\]"):
        sampler.set_probs([float("nan"), 1.0])
    with pytest.raises(ValueError, match="task_names must name every task"):
        WeightedTaskSampler([3, 3], [1.0, 1.0], task_names=["x"])


def test_the_stream_needs_start_before_drawing() -> None:
    stream = TaskStream(["a", "b"])
    assert stream.sampling_probs == [0.5, 0.5] and not stream.started
    with pytest.raises(RuntimeError, match="start"):
        stream.next_batch(2)
    stream.start([2, 3])
    step, indices = stream.next_batch(4)
    assert step == 0 and len(indices) == 4 and stream.remaining(5) == 5
    stream.consume(step)
    assert stream.remaining(5) == 4
    torch.testing.assert_close(stream.probs, torch.tensor([0.5, 0.5], dtype=torch.float64))
