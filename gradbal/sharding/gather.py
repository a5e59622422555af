"""gather_full_state: the full (unsharded) state dict of a model on every rank."""

from __future__ import annotations

from torch import Tensor, nn

from gradbal.sharding.shard import is_sharded


def gather_full_state(model: nn.Module) -> dict[str, Tensor]:
    """Return ``model``'s full state dict, on the CPU, on every rank.

    A collective for a sharded model: every rank must call it (called on rank 0 only, rank 0
    waits forever for the others' shards). For an unsharded model it is ``model.state_dict()``
    (tensors on their device, nothing communicated).

    Example::

        >>> sorted(gather_full_state(nn.Linear(2, 3)))
        ['bias', 'weight']
    """
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload=True would leave every rank but 0 with an empty dict.
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: value.cpu() for name, value in state.items() if isinstance(value, Tensor)}
