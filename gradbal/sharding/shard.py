"""shard_for_trainer: apply FSDP2 (``fully_shard``) in ``configure_model`` when the Trainer runs
Lightning's ``ModelParallelStrategy``; a no-op under any other strategy."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from gradbal.contracts import trainer_of
from gradbal.sharding.fsdp2 import FSDP2Strategy


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` or one of its submodules is sharded by FSDP2 (``fully_shard``) or
    FSDP1 (``FullyShardedDataParallel``)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def shard_for_trainer(
    module: LightningModule, model: nn.Module, sharding: FSDP2Strategy | None
) -> nn.Module:
    """Shard ``model`` (a submodule of ``module``) with FSDP2 if the Trainer asks for it.

    Under ``ModelParallelStrategy`` every unit of ``sharding`` (default
    ``FSDP2Strategy()``: the decoder layers) and then ``model`` itself get ``fully_shard`` over
    the data-parallel dimension of the Trainer's device mesh. Sharding is in place (the module
    classes change to their ``FSDP*`` subclasses) and idempotent. Under other strategies (or
    without a Trainer) nothing happens. Call it from ``configure_model``, once per model
    (policy, frozen reference copy).

    Args:
        module: The LightningModule; its Trainer's strategy and device mesh decide.
        model: The submodule to shard.
        sharding: Units and options; ``None``: ``FSDP2Strategy()``.

    Returns:
        ``model`` (sharded or not).

    Raises:
        NotImplementedError: For a peft (LoRA) model, or tensor parallelism
            (``tensor_parallel_size > 1``): neither is supported yet.
        ValueError: If an entry of ``sharding.units`` matches no module.
    """
    trainer = trainer_of(module)
    strategy = trainer.strategy if trainer is not None else None
    if not isinstance(strategy, ModelParallelStrategy) or is_sharded(model):
        return model
    from torch.distributed.fsdp import fully_shard

    if hasattr(model, "peft_config") or hasattr(model, "disable_adapter"):
        raise NotImplementedError(
            f"{type(module).__name__}: LoRA (peft) models cannot be sharded by gradbal yet: "
            "FSDP2 would shard the frozen base and the adapters together, and merging the "
            "adapters for export needs the full base weights on one rank, which is not "
            "implemented. Train LoRA with strategy 'ddp' (the base is frozen, so every rank "
            "holds it once, without optimiser state), or drop `lora` to shard full "
            "fine-tuning with ModelParallelStrategy."
        )
    mesh = strategy.device_mesh
    if mesh["tensor_parallel"].size() > 1:
        raise NotImplementedError(
            f"{type(module).__name__}: ModelParallelStrategy with tensor_parallel_size="
            f"{mesh['tensor_parallel'].size()}: gradbal shards with FSDP2 over data-parallel "
            "ranks only (its per-task gradient capture assumes whole rows per rank). Set "
            "`tensor_parallel_size: 1` and `data_parallel_size` to the number of devices "
            "(its 'auto' default puts every device of a node in the tensor-parallel group)."
        )
    options = sharding or FSDP2Strategy()
    kwargs = options.fully_shard_kwargs(strategy.root_device)
    data_mesh = mesh["data_parallel"]
    for _, unit in options.find_units(model):
        fully_shard(unit, mesh=data_mesh, **kwargs)
    fully_shard(model, mesh=data_mesh, **kwargs)
    # transformers' generate() then keeps every rank stepping until all ranks are done
    # (`synced_gpus`): a rank that stopped early would leave the others waiting in an all-gather.
    setattr(model, "_is_fsdp_managed_module", True)  # noqa: B010
    return model
