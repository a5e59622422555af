"""docs/errors.md M01..M03, each triggered here with the documented message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gradbal.weighting import ExcessLossWeights, LearningProgressBandit, importance_weighted_reward
from tests.integration._errors_doc import check_doc_rows, doc_rows

CASES: dict[str, Callable[[], object]] = {
    "M01": lambda: LearningProgressBandit(eta=-1),
    "M02": lambda: ExcessLossWeights(smoothing=2),
    "M03": lambda: importance_weighted_reward(
        torch.ones(2), torch.tensor([0.0, 1.0]), torch.tensor([True, False])
    ),
}


def test_the_doc_lists_the_m_rows() -> None:
    check_doc_rows("M", dict.fromkeys(CASES, ValueError))


@pytest.mark.parametrize("row", CASES)
def test_each_m_row_gives_the_documented_message(row: str) -> None:
    documented = doc_rows("M")[row].split(": ", 1)[1].strip("`")
    with pytest.raises(ValueError) as err:
        CASES[row]()
    assert str(err.value) == documented
