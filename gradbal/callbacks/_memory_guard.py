"""Refuse a gradient monitor whose share buffers would take too much of a device's memory
(private)."""

from __future__ import annotations

import os

import torch
from lightning.pytorch import LightningModule, Trainer

from gradbal.gradstats import NAMED_SELECTIONS, TaskGradCapture

_GB = 1024**3  # GiB


def device_memory(device: torch.device, processes: int) -> int:
    """Bytes one rank may count on: a GPU's total memory; on CPU the physical memory divided
    by the processes that share it."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(physical) // max(processes, 1)


def check_buffer_memory(
    owner: str,
    capture: TaskGradCapture,
    num_segments: int,
    device: torch.device,
    max_fraction: float,
    trainer: Trainer,
    pl_module: LightningModule,
    selection: str,
    include_frozen: bool,
) -> None:
    """Raise if ``num_segments`` share buffers exceed ``max_fraction`` of the device's memory.

    Every rank holds the full, unsharded fp32 buffers, also under FSDP or ZeRO-3:
    ``bytes = S x (sum of the measured weights' and biases' declared sizes) x 4``.
    """
    need = capture.buffer_bytes(num_segments)
    processes = 1 if device.type == "cuda" else int(getattr(trainer, "num_devices", 1) or 1)
    limit = max_fraction * device_memory(device, processes)
    if need <= limit:
        return
    cheaper = []
    for other in NAMED_SELECTIONS:
        if other == selection:
            continue
        try:
            other_capture = TaskGradCapture(pl_module, other, include_frozen=include_frozen)
        except ValueError:
            continue  # selects nothing in this model
        size = other_capture.buffer_bytes(num_segments)
        if size <= limit:
            cheaper.append(f"{other!r} ({size / _GB:.3g} GiB)")
    raise RuntimeError(
        f"{owner}(params={selection!r}) would keep {num_segments} fp32 gradient shares of its "
        f"{len(capture.measured_params)} measured parameters on each rank: {need / _GB:.3g} GiB, "
        f"more than max_memory_fraction={max_fraction} of this {device.type} device's "
        f"{limit / max_fraction / _GB:.3g} GiB (sharding does not shrink them: every rank "
        f"holds them whole). Measure fewer layers: "
        f"{', '.join(cheaper) if cheaper else 'a regular expression on a few layers'}; or "
        "raise max_memory_fraction if the memory is there."
    )
