"""PreferenceFileTask: preference pairs from local files or a Hub dataset, text or conversational."""

from __future__ import annotations

import logging
import os
from typing import Literal

import datasets

from gradbal.tasks._file_rows import check_utf8
from gradbal.tasks.data_files import check_exists, infer_format, split_files
from gradbal.tasks.preference import preference_row
from gradbal.tasks.rewards import ExactMatch
from gradbal.tasks.task import RewardFn, Task

__all__ = ["PreferenceFileTask"]

_log = logging.getLogger(__name__)
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_DEFAULT_REWARD = ExactMatch(answer_column="chosen")
_REWRITTEN = ("prompt", "chosen", "rejected", "answer", "prompt_messages")


class PreferenceFileTask:
    """A preference task (``prompt``, ``chosen``, ``rejected``) read with ``datasets``.

    Rows may be plain text or conversational (lists of ``{"role", "content"}`` messages, whose
    prompt gets the policy tokenizer's chat template in the module), with an explicit ``prompt``
    column or an implicit one (the common prefix of ``chosen`` and ``rejected``); see
    :func:`gradbal.tasks.preference_row`. Loading: read the splits, rename with
    ``column_mapping``, normalise every row, carve ``validation_size`` seeded train rows when
    there is no validation split, keep at most ``max_train_samples`` train rows. Other columns
    are kept. Token-level truncation is the module's (``max_prompt_length``,
    ``max_completion_length``).

    Args:
        name: Task name, ``[a-z0-9_]+``.
        data_files: Local JSON/JSONL, Parquet or CSV files: a path or list (the train split) or
            ``{"train": ..., "validation": ...}``.
        hub_name: A Hub dataset instead, e.g. ``"trl-lib/ultrafeedback_binarized"``.
        hub_config: The Hub dataset's configuration name.
        format: ``json``/``parquet``/``csv``; inferred from the suffix by default.
        train_split: Split to train on.
        validation_split: Split to validate on; carved from train if ``None`` or missing.
        validation_size: Rows carved from train when there is no validation split.
        column_mapping: Source column -> ``prompt``/``chosen``/``rejected``, e.g.
            ``{"question": "prompt", "good": "chosen", "bad": "rejected"}``.
        reward: Scores generated completions (validation with ``val_generate``); default: exact
            match with ``chosen``.
        max_train_samples: Keep at most this many train rows (seeded subset).
        seed: Seed for carving validation and subsampling train.
        cache_dir: ``datasets`` cache directory.

    Raises:
        ValueError: On inconsistent arguments; in :meth:`load`, on a missing split or column, a
            malformed row (see ``preference_row``), or too few rows to carve validation from.
        FileNotFoundError: In :meth:`load`, if a local file does not exist.
        ConnectionError: In :meth:`load`, if the Hub is unreachable and the dataset not cached.

    Example::

        >>> import json, tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> path = os.path.join(tmp, "pairs.jsonl")
        >>> with open(path, "w") as f:
        ...     for i in range(4):
        ...         msgs = [{"role": "user", "content": f"{i}+{i}?"}]
        ...         print(json.dumps({"prompt": msgs,
        ...                           "chosen": [{"role": "assistant", "content": str(2 * i)}],
        ...                           "rejected": [{"role": "assistant", "content": "?"}]}), file=f)
        >>> task = PreferenceFileTask("double", data_files=path, validation_size=1,
        ...                           cache_dir=os.path.join(tmp, "cache")).load()
        >>> len(task.train), len(task.validation), sorted(task.train.column_names)
        (3, 1, ['answer', 'chosen', 'prompt', 'prompt_messages', 'rejected'])
    """

    def __init__(
        self,
        name: str,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        format: Literal["json", "parquet", "csv"] | None = None,
        train_split: str = "train",
        validation_split: str | None = "validation",
        validation_size: int = 200,
        column_mapping: dict[str, str] | None = None,
        reward: RewardFn = _DEFAULT_REWARD,
        max_train_samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        if (data_files is None) == (hub_name is None):
            raise ValueError(
                f"PreferenceFileTask {name!r}: pass exactly one of data_files (local files) and "
                f"hub_name (a Hub dataset). Got data_files={data_files!r}, hub_name={hub_name!r}."
            )
        if validation_size < 1 or (max_train_samples is not None and max_train_samples < 1):
            raise ValueError(
                f"PreferenceFileTask {name!r}: validation_size and max_train_samples must be "
                f">= 1. Got {validation_size!r} and {max_train_samples!r}."
            )
        self.name = name
        self.data_files = data_files
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.format = format
        self.train_split = train_split
        self.validation_split = validation_split
        self.validation_size = validation_size
        self.column_mapping = dict(column_mapping or {})
        self.reward = reward
        self.max_train_samples = max_train_samples
        self.seed = seed
        self.cache_dir = cache_dir

    def __repr__(self) -> str:
        return f"PreferenceFileTask(name={self.name!r}, {self._source()})"

    def _source(self) -> str:
        if self.hub_name is not None:
            return f"hub_name={self.hub_name!r}, hub_config={self.hub_config!r}"
        return f"data_files={self.data_files!r}"

    def load(self) -> Task:
        """Read, normalise and split the pairs.

        Returns:
            The task: columns ``prompt``, ``chosen``, ``rejected``, ``answer`` (= chosen),
            ``prompt_messages`` for conversational data, and the other source columns.
        """
        raw = self._load_raw()
        if self.train_split not in raw:
            raise ValueError(
                f"PreferenceFileTask {self.name!r}: no split {self.train_split!r} in "
                f"{self._source()}. Splits found: {list(raw)}. Set train_split to one of them."
            )
        train = self._prepare(raw[self.train_split])
        if self.validation_split is not None and self.validation_split in raw:
            validation = self._prepare(raw[self.validation_split])
        else:
            if len(train) <= self.validation_size:
                raise ValueError(
                    f"PreferenceFileTask {self.name!r}: no validation split (found {list(raw)}) "
                    f"and {len(train)} train rows are too few to carve validation_size="
                    f"{self.validation_size} from. Lower validation_size or add a validation split."
                )
            _log.info("PreferenceFileTask %r: validation carved from train.", self.name)
            parts = train.train_test_split(test_size=self.validation_size, seed=self.seed)
            train, validation = parts["train"], parts["test"]
        if self.max_train_samples is not None and len(train) > self.max_train_samples:
            train = train.shuffle(seed=self.seed).select(range(self.max_train_samples))
        return Task(self.name, train=train, validation=validation, reward=self.reward)

    def _load_raw(self) -> datasets.DatasetDict:
        if self.hub_name is None:
            files = split_files(self.data_files, self.train_split)
            for paths in files.values():
                for path in paths:
                    check_exists(self.name, path)
            fmt = self.format or infer_format(self.name, [p for ps in files.values() for p in ps])
            check_utf8(f"PreferenceFileTask {self.name!r}", files, fmt)
            loaded = datasets.load_dataset(fmt, data_files=files, cache_dir=self.cache_dir)
        else:
            try:
                loaded = datasets.load_dataset(
                    self.hub_name, self.hub_config, cache_dir=self.cache_dir
                )
            except Exception as err:
                offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "0") not in ("", "0")]
                if not offline and not isinstance(err, ConnectionError):
                    raise
                raise ConnectionError(
                    f"PreferenceFileTask {self.name!r}: cannot load Hub dataset "
                    f"{self.hub_name!r}: the Hub is unreachable ({offline or err}) and the "
                    "dataset is not cached. Download it where there is network, or pass local "
                    "files with data_files=."
                ) from err
        if not isinstance(loaded, datasets.DatasetDict):
            raise TypeError(
                f"PreferenceFileTask {self.name!r}: expected a DatasetDict from {self._source()}, "
                f"got {type(loaded).__name__} (streaming datasets are not supported)."
            )
        return loaded

    def _prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        found = dataset.column_names
        missing = [c for c in self.column_mapping if c not in found]
        if missing:
            raise ValueError(
                f"PreferenceFileTask {self.name!r}: column_mapping names columns {missing} that "
                f"are not in the data. Columns found: {found}. Fix the keys of column_mapping."
            )
        dataset = dataset.rename_columns(self.column_mapping)
        if len(dataset) == 0 or not {"chosen", "rejected"} <= set(dataset.column_names):
            raise ValueError(
                f"PreferenceFileTask {self.name!r}: need a non-empty split with 'chosen' and "
                f"'rejected' columns (and usually 'prompt'). Got {len(dataset)} rows with columns "
                f"{dataset.column_names}. Map yours with column_mapping={{'<yours>': 'chosen'}}."
            )
        rewritten = [c for c in _REWRITTEN if c in dataset.column_names]
        return dataset.map(
            preference_row, remove_columns=rewritten, desc=f"preference rows of {self.name}"
        )
