"""Online class-incremental learning, in one package: the stream, the replay buffer, the
objectives that use it (fine-tuning, ER, GSA) and the LightningModule that runs them.

The pure GSA math (per-class gradient statistics and weights, Guo et al., CVPR 2023) stays in
:mod:`gradbal.objectives.gsa`; this package wires it to data, replay and Lightning.

* :class:`ClassIncrementalDataModule`: tasks with disjoint classes, one per epoch, each sample
  seen once (``stream.py``).
* :class:`ReservoirBuffer`: the seeded, resumable replay buffer (``replay_buffer.py``).
* :class:`FineTune`, :class:`ER`, :class:`GSA`: the objectives, chosen in YAML by
  ``class_path`` (``objectives.py``).
* :class:`OnlineContinualModule`: the LightningModule (``module.py``).

The names were importable from ``gradbal.modules`` and ``gradbal.datamodules`` before; they still
are, so existing configs keep working.
"""

from gradbal.continual.module import (
    ER,
    GSA,
    ContinualLoss,
    ContinualObjective,
    ContinualStep,
    FineTune,
    OnlineContinualModule,
)
from gradbal.continual.replay_buffer import ReplaySample, ReservoirBuffer
from gradbal.continual.stream import ClassIncrementalDataModule

__all__ = [
    "ER",
    "GSA",
    "ClassIncrementalDataModule",
    "ContinualLoss",
    "ContinualObjective",
    "ContinualStep",
    "FineTune",
    "OnlineContinualModule",
    "ReplaySample",
    "ReservoirBuffer",
]
