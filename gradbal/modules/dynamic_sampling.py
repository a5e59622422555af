"""DAPO's dynamic sampling for ``GRPOModule``: drop groups with no learning signal, refill.

A group whose completions all got the same reward has all-zero advantages, so it adds compute and
no policy gradient (it still dilutes a token-mean loss). DAPO (Yu et al. 2025, "DAPO: An
Open-Source LLM Reinforcement Learning System at Scale", arXiv:2503.14476, Sec. 3.2, Eq. 11)
over-samples and filters those groups out "until the batch is fully filled with samples whose
accuracy is neither 0 nor 1". gradbal does this per rollout, bounded: after the batch's own
prompts, at most ``max_rounds`` extra rounds draw prompts from the DataModule
(``draw_prompts``, the current task mixture) and generate for them, until the rollout has as many
kept groups as the batch had prompts.

Reconstructed (DAPO's text gives the rule, not these details): the bound on rounds; the size of
each round (the shortfall divided by the keep rate seen so far, at least ``min_keep_rate``, at
most one batch); what happens when the bound is hit (the rollout trains on the groups it kept,
fewer than a full batch, or on the batch's own groups if none was kept); and under several
processes every rank running the same number of rounds (a rank that is full draws one prompt a
round and discards it), since a sharded model's generation is collective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gradbal.modules._sequences import Sequences

__all__ = ["DynamicSampling", "concat_sequences", "select_rows"]


class DynamicSampling:
    """Filter out groups whose rewards are all equal and refill the rollout (DAPO, Sec. 3.2).

    Pass to ``GRPOModule(dynamic_sampling=DynamicSampling(...))`` (in YAML: ``class_path:
    gradbal.modules.DynamicSampling``). The DataModule must have ``draw_prompts(n, seed)``
    (:class:`~gradbal.datamodules.MultiTaskDataModule` has). Logged per task, at each rollout:
    ``train/dynamic_sampling/dropped_groups/<task>`` (groups filtered out, over all rounds) and
    ``train/dynamic_sampling/extra_completions/<task>`` (completions generated in extra rounds:
    the cost), and ``train/dynamic_sampling/rounds``.

    Args:
        max_rounds: Extra generation rounds per rollout at most, >= 1 (the cost bound: one
            rollout generates at most ``1 + max_rounds`` batches).
        min_keep_rate: The lowest keep rate assumed when sizing a round, in ``(0, 1]``: a round
            draws ``ceil(shortfall / max(keep rate so far, min_keep_rate))`` prompts, at most one
            batch.

    Raises:
        ValueError: On ``max_rounds < 1`` or ``min_keep_rate`` outside ``(0, 1]``.

    Example::

        >>> DynamicSampling(max_rounds=2).round_size(shortfall=3, kept=4, drawn=8, batch=8)
        6
    """

    def __init__(self, max_rounds: int = 3, min_keep_rate: float = 0.25):
        if not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(
                f"DynamicSampling(max_rounds=...) must be an int >= 1, got {max_rounds!r}: it "
                "bounds the extra generation rounds per rollout (without dynamic sampling, "
                "leave `dynamic_sampling` unset)."
            )
        if not 0.0 < min_keep_rate <= 1.0:
            raise ValueError(
                f"DynamicSampling(min_keep_rate=...) must be in (0, 1], got {min_keep_rate!r}. "
                "It is the smallest share of kept groups assumed when sizing a refill round."
            )
        self.max_rounds = max_rounds
        self.min_keep_rate = min_keep_rate

    def round_size(self, shortfall: int, kept: int, drawn: int, batch: int) -> int:
        """Prompts to draw in the next round: ``shortfall`` kept groups are missing after
        ``drawn`` groups gave ``kept``; at least 1, at most ``batch``."""
        if shortfall <= 0:
            return 1
        rate = max(kept / max(drawn, 1), self.min_keep_rate)
        return max(1, min(batch, math.ceil(shortfall / rate)))

    def __repr__(self) -> str:
        return f"DynamicSampling(max_rounds={self.max_rounds}, min_keep_rate={self.min_keep_rate})"


def concat_sequences(parts: Sequence[Sequences], pad_id: int) -> Sequences:
    """Stack sequence batches of different prompt and completion widths into one.

    Prompts are left-padded to the widest prompt, completions right-padded to the widest
    completion (pad tokens, mask 0); position ids follow the attention mask, so every row scores
    as it did in its own batch.
    """
    if len(parts) == 1:
        return parts[0]
    p = max(s.prompt_length for s in parts)
    c = max(s.completion_mask.shape[1] for s in parts)
    ids, masks, cmasks = [], [], []
    for s in parts:
        n, left, right = s.input_ids.shape[0], p - s.prompt_length, c - s.completion_mask.shape[1]
        ids.append(
            torch.nn.functional.pad(s.input_ids[:, : s.prompt_length], (left, 0), value=pad_id)
        )
        ids[-1] = torch.cat(
            [
                ids[-1],
                torch.nn.functional.pad(
                    s.input_ids[:, s.prompt_length :], (0, right), value=pad_id
                ),
            ],
            dim=1,
        )
        masks.append(torch.nn.functional.pad(s.attention_mask, (left, right), value=0))
        cmasks.append(torch.nn.functional.pad(s.completion_mask, (0, right), value=False))
        assert ids[-1].shape == (n, p + c)
    return Sequences(torch.cat(ids), torch.cat(masks), torch.cat(cmasks), p)


def select_rows(seqs: Sequences, rows: Tensor) -> Sequences:
    """The rows ``rows`` (``[M]`` long indices) of a sequence batch, same widths."""
    return Sequences(
        seqs.input_ids[rows],
        seqs.attention_mask[rows],
        seqs.completion_mask[rows],
        seqs.prompt_length,
    )


def pad_columns(t: Tensor | None, width: int, value: float = 0.0) -> Tensor | None:
    """Right-pad a ``[N, C]`` per-token tensor to ``width`` columns (``None`` stays ``None``)."""
    if t is None or t.shape[1] == width:
        return t
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
