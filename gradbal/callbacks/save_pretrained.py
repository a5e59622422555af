"""SavePretrained: write the trained policy as a Hugging Face directory when fitting ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from gradbal.sharding import gather_full_state, is_sharded


class SavePretrained(Callback):
    """Exports the policy with ``save_pretrained`` (LoRA merged) at the end of ``fit``.

    The directory loads back with ``transformers.AutoModelForCausalLM.from_pretrained`` or
    ``gradbal.models.PretrainedPolicy``, e.g. to start GRPO from an SFT warm start.

    Under ``ModelParallelStrategy`` (FSDP2) every rank gathers the full weights (a collective),
    then rank 0 writes ``pl_module.model`` with them and ``pl_module.tokenizer``.

    Args:
        dirpath: where to write; default ``<log_dir>/hf_model``.

    Raises:
        RuntimeError: at ``setup`` when the module has no ``save_pretrained(path)`` method.

    Example::

        >>> SavePretrained("runs/sft/hf_model").dirpath
        'runs/sft/hf_model'
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "save_pretrained", None)):
            raise RuntimeError(
                f"SavePretrained needs a module with a `save_pretrained(path)` method; "
                f"{type(pl_module).__name__} has none. Remove the callback or add the method."
            )

    def target(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "hf_model"

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.target(trainer)
        model = getattr(pl_module, "model", None)
        if isinstance(model, nn.Module) and is_sharded(model):
            state = gather_full_state(model)  # on every rank: each holds a shard
            if trainer.is_global_zero:
                path.mkdir(parents=True, exist_ok=True)
                model.save_pretrained(path, state_dict=state)  # type: ignore[operator]
                tokenizer: Any = pl_module.tokenizer
                tokenizer.save_pretrained(path)
                rank_zero_info(f"Saved the policy for from_pretrained in {path}")
        elif trainer.is_global_zero:
            pl_module.save_pretrained(path)  # type: ignore[operator]
            rank_zero_info(f"Saved the policy for from_pretrained in {path}")
        trainer.strategy.barrier("SavePretrained")
