"""The modules hand freed heap pages back to the OS after each CPU training step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import gradbal.modules.dpo
import gradbal.modules.grpo
import gradbal.modules.sft
from gradbal.models import TinyPolicy
from gradbal.modules import DPOModule, GRPOModule, SFTModule
from gradbal.modules._host_memory import _malloc_trim, release_host_memory


def rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS")) / 1024


def test_accelerators_and_meta_are_left_alone() -> None:
    assert release_host_memory(torch.device("meta")) is False
    assert release_host_memory(torch.device("cuda", 0)) is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _malloc_trim() is None, reason="needs glibc"
)
def test_freed_heap_blocks_go_back_to_the_os() -> None:
    # 64 KB blocks sit below glibc's mmap threshold, so they come from the heap; the block
    # allocated after them pins the heap's top, so free() alone cannot shrink it.
    blocks = [torch.ones(16 * 1024) for _ in range(6000)]  # ~375 MB of 64 KB blocks
    pin = torch.ones(16 * 1024)
    del blocks
    before = rss_mb()
    assert release_host_memory(torch.device("cpu")) is True
    after = rss_mb()
    assert before - after > 200, (before, after)
    del pin


@pytest.mark.parametrize(
    ("module_file", "build"),
    [
        (gradbal.modules.grpo, lambda: GRPOModule(TinyPolicy(hidden_size=32, num_layers=1))),
        (gradbal.modules.dpo, lambda: DPOModule(TinyPolicy(hidden_size=32, num_layers=1))),
        (gradbal.modules.sft, lambda: SFTModule(TinyPolicy(hidden_size=32, num_layers=1))),
    ],
    ids=["grpo", "dpo", "sft"],
)
def test_every_policy_module_releases_after_each_training_batch(
    module_file: Any, build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[torch.device] = []
    monkeypatch.setattr(module_file, "release_host_memory", calls.append)
    build().on_train_batch_end(None, {}, 0)
    assert calls == [torch.device("cpu")]
