"""Sharded training with FSDP2 through Lightning's ``ModelParallelStrategy`` (docs/distributed.md)."""

from gradbal.sharding.fsdp2 import FSDP2Strategy
from gradbal.sharding.gather import gather_full_state
from gradbal.sharding.shard import is_sharded, shard_for_trainer

__all__ = ["FSDP2Strategy", "gather_full_state", "is_sharded", "shard_for_trainer"]
