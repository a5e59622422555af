"""Reference log-probabilities computed once over the task datasets, cached with ``datasets``.

``with_reference_columns`` adds ``ref_chosen_logps`` / ``ref_rejected_logps`` columns with
``Dataset.map``; given a cache file, ``datasets`` writes them as Arrow there and later runs with
the same data, model weights and tokenisation settings load them without a forward pass.
``ReferenceTable`` holds the values (floats only, no model) for look-up during training.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import torch
from torch import Tensor

from gradbal.tasks import Task

REF_CHOSEN, REF_REJECTED = "ref_chosen_logps", "ref_rejected_logps"
PairKey = tuple[int, str, str, str, str]
LogpsFn = Callable[[list[str], list[dict[str, Any]]], tuple[Tensor, Tensor]]


def pair_key(task_id: int, prompt: str, row: Mapping[str, Any]) -> PairKey:
    """What identifies a pair: its task, prompt (and prompt messages) and both completions."""
    messages = str(row.get("prompt_messages") or "")
    return (task_id, prompt, messages, str(row["chosen"]), str(row["rejected"]))


def has_reference_columns(dataset: datasets.Dataset) -> bool:
    return {REF_CHOSEN, REF_REJECTED} <= set(dataset.column_names)


def model_fingerprint(model: torch.nn.Module, settings: str) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, values) plus ``settings``."""
    digest = hashlib.sha256(settings.encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def with_reference_columns(
    dataset: datasets.Dataset,
    logps_fn: LogpsFn,
    *,
    batch_size: int,
    cache_file: str | None,
    fingerprint: str,
    desc: str,
) -> datasets.Dataset:
    """``dataset`` plus ``ref_chosen_logps`` / ``ref_rejected_logps`` (floats) from ``logps_fn``.

    Args:
        dataset: Preference rows (``prompt``, ``chosen``, ``rejected``, ...).
        logps_fn: ``(prompts, other columns per row) -> (chosen [n], rejected [n])``.
        batch_size: Rows per call of ``logps_fn``.
        cache_file: Arrow file to write (and to load from when it exists), or ``None`` to keep
            the result in memory only.
        fingerprint: Identifies data, model and settings (``datasets``' cache key).
        desc: Progress-bar label.
    """

    def compute(batch: dict[str, list[Any]]) -> dict[str, list[float]]:
        prompts = [str(p) for p in batch["prompt"]]
        others = [k for k in batch if k not in ("prompt", "answer")]
        columns = [{k: batch[k][i] for k in others} for i in range(len(prompts))]
        chosen, rejected = logps_fn(prompts, columns)
        return {REF_CHOSEN: chosen.tolist(), REF_REJECTED: rejected.tolist()}

    return dataset.map(
        compute,
        batched=True,
        batch_size=batch_size,
        cache_file_name=cache_file,
        load_from_cache_file=cache_file is not None,
        keep_in_memory=cache_file is None,
        new_fingerprint=fingerprint,
        desc=desc,
    )


class ReferenceTable:
    """Precomputed reference log-probs of every pair, looked up by :func:`pair_key`.

    Example::

        >>> ds = datasets.Dataset.from_dict({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"],
        ...                                  REF_CHOSEN: [-1.5], REF_REJECTED: [-2.0]})
        >>> table = ReferenceTable(); table.add(0, ds)
        >>> table.lookup([0], ["p"], [{"chosen": "a", "rejected": "b"}])
        (tensor([-1.5000]), tensor([-2.]))
    """

    def __init__(self) -> None:
        self._values: dict[PairKey, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def add(self, task_id: int, dataset: datasets.Dataset) -> None:
        """Remember the reference columns of every row of ``dataset``."""
        keep = [
            c
            for c in ("prompt", "prompt_messages", "chosen", "rejected")
            if c in dataset.column_names
        ]
        data = dataset.select_columns([*keep, REF_CHOSEN, REF_REJECTED]).to_dict()
        for i, prompt in enumerate(data["prompt"]):
            row = {k: data[k][i] for k in keep}
            self._values[pair_key(task_id, prompt, row)] = (
                float(data[REF_CHOSEN][i]),
                float(data[REF_REJECTED][i]),
            )

    def lookup(
        self, task_ids: Sequence[int], prompts: Sequence[str], columns: Sequence[Mapping[str, Any]]
    ) -> tuple[Tensor, Tensor]:
        """``(ref_chosen [B], ref_rejected [B])`` float32: a row's own columns, else the table.

        Raises:
            KeyError: For a pair that was never precomputed.
        """
        values = []
        for task_id, prompt, row in zip(task_ids, prompts, columns, strict=True):
            if REF_CHOSEN in row and REF_REJECTED in row:
                values.append((float(row[REF_CHOSEN]), float(row[REF_REJECTED])))
                continue
            key = pair_key(task_id, prompt, row)
            if key not in self._values:
                raise KeyError(
                    f"No precomputed reference log-probs for the pair {key[1:]!r} of task id "
                    f"{task_id} ({len(self)} pairs precomputed). Reference log-probs are computed "
                    "at setup over the DataModule's tasks; use reference='model' for data that "
                    "changes during training."
                )
            values.append(self._values[key])
        out = torch.tensor(values, dtype=torch.float32).reshape(-1, 2)  # [B, 2]
        return out[:, 0], out[:, 1]


def precompute_reference(
    tasks: Sequence[Task],
    logps_fn: LogpsFn,
    *,
    weights_key: str,
    cache_dir: str | None,
    batch_size: int,
) -> ReferenceTable:
    """Reference log-probs of every pair of every task's train and validation split.

    Splits that already have ``ref_chosen_logps`` / ``ref_rejected_logps`` columns are taken as
    they are. Each other split is scored with ``logps_fn`` through :func:`with_reference_columns`;
    with ``cache_dir``, the Arrow file is named by task, split and a hash of the split's
    ``datasets`` fingerprint and ``weights_key`` (model weights and tokenisation settings).
    """
    table = ReferenceTable()
    for t, task in enumerate(tasks):
        for split_name, split in (("train", task.train), ("validation", task.validation)):
            if not has_reference_columns(split):
                key = hashlib.sha256(f"{split._fingerprint}{weights_key}".encode()).hexdigest()
                name = f"ref-{task.name}-{split_name}-{key[:16]}.arrow"
                split = with_reference_columns(
                    split,
                    logps_fn,
                    batch_size=batch_size,
                    cache_file=os.path.join(cache_dir, name) if cache_dir else None,
                    fingerprint=key[:32],
                    desc=f"reference log-probs of {task.name} ({split_name})",
                )
            table.add(t, split)
    return table
