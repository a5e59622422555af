from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tests may run beside other processes on a 2-core machine: oversubscribed threads make torch
    # many times slower (docs/benchmarks.md), one thread keeps runs predictable.
    torch.set_num_threads(1)
