"""Options shared by the whole suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gpu-tests-on",
        choices=["cuda", "cpu"],
        default="cuda",
        help="device for tests/gpu (default cuda, skipped without one; cpu checks their logic)",
    )
