"""The device the GPU tests run on: CUDA when present; ``--gpu-tests-on=cpu`` checks their logic.

Without CUDA and without the option the tests are skipped, so ``make test`` on a CPU machine
reports them as skipped, not passed.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    chosen = request.config.getoption("--gpu-tests-on")
    if chosen == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run with --gpu-tests-on=cpu to check the tests' logic)")
    return torch.device("cuda")
