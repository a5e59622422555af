"""FileTask: a task read from local JSON/JSONL, Parquet or CSV files, or from the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
import string
from typing import Any, Literal

import datasets

from gradbal.tasks._file_rows import RowOrigins, check_utf8, expand, find_bad_json_line
from gradbal.tasks._validation import check_rows, column_values
from gradbal.tasks.data_files import check_exists, infer_format, split_files
from gradbal.tasks.rewards import ExactMatch
from gradbal.tasks.task import RewardFn, Task

__all__ = ["FileTask"]

_log = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_ROW = "__gradbal_row__"  # raw row number, carried through mapping, carving and subsampling
# Rewards hold configuration only, so one shared default instance is safe.
_DEFAULT_REWARD = ExactMatch()


class FileTask:
    """A task whose rows come from data files or a Hub dataset, mapped to gradbal's columns.

    Loading steps, in order: read the splits with ``datasets.load_dataset``; in ``train_split``
    (and ``validation_split`` if it exists) rename columns with ``column_mapping``, build
    ``prompt`` from ``prompt_template`` if set, and cast ``prompt``/``answer`` to strings; if
    there is no validation split, carve ``validation_size`` random train rows (seeded); keep at
    most ``max_train_samples`` train rows (a seeded random subset). Every other column is kept and
    reaches the reward.

    Args:
        name: Task name, ``[a-z0-9_]+``.
        data_files: Local files (paths or globs, relative to the working directory). A path or
            list goes to ``train_split``; a dict maps split names to files, e.g.
            ``{"train": "train.jsonl", "validation": "val.jsonl"}``.
        hub_name: A Hub dataset name, e.g. ``"openai/gsm8k"`` (instead of ``data_files``).
        hub_config: The Hub dataset's configuration name, e.g. ``"main"``.
        format: File format; by default inferred from the suffix (``.jsonl`` and ``.json`` are
            ``json``, ``.parquet``/``.pq`` are ``parquet``, ``.csv`` is ``csv``, also compressed
            as ``.gz`` etc.).
        train_split: Split to train on.
        validation_split: Split to validate on; if None or missing, validation is carved from
            train.
        validation_size: Rows carved from train when there is no validation split.
        column_mapping: Source column -> gradbal column, e.g.
            ``{"question": "prompt", "solution": "answer"}``.
        prompt_template: A ``str.format`` template over the row's columns that builds
            ``prompt``, e.g. ``"Q: {question}\\nA:"``. Fields may use column names from
            before or after ``column_mapping``.
        reward: The task's reward; the default compares the first line with ``answer``.
        max_train_samples: Keep at most this many train rows.
        seed: Seed for carving validation and subsampling train.
        cache_dir: ``datasets`` cache directory (default: the ``datasets`` default).

    Raises:
        ValueError: If the arguments are inconsistent (neither or both of ``data_files`` and
            ``hub_name``, a malformed template, non-positive sizes); in :meth:`load`, for an
            unknown format, a missing split or column, or an empty dataset.
        FileNotFoundError: In :meth:`load`, if a local file does not exist.
        ConnectionError: In :meth:`load`, if ``hub_name`` is set and the Hub is unreachable
            (offline mode or no network) and the dataset is not cached.

    Example::

        >>> import json, tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> path = os.path.join(tmp, "qa.jsonl")
        >>> with open(path, "w") as f:
        ...     for i in range(6):
        ...         print(json.dumps({"question": f"{i}+{i}", "solution": 2 * i}), file=f)
        >>> task = FileTask(
        ...     "double",
        ...     data_files=path,
        ...     column_mapping={"solution": "answer"},
        ...     prompt_template="Q: {question}\\nA:",
        ...     validation_size=2,
        ...     cache_dir=os.path.join(tmp, "cache"),
        ... ).load()
        >>> len(task.train), len(task.validation)
        (4, 2)
        >>> sorted(task.train[0])
        ['answer', 'prompt', 'question']
        >>> task.train.features["answer"].dtype
        'string'
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
        prompt_template: str | None = None,
        reward: RewardFn = _DEFAULT_REWARD,
        max_train_samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        if (data_files is None) == (hub_name is None):
            raise ValueError(
                f"FileTask {name!r}: pass exactly one of data_files (local files) and hub_name "
                f"(a Hub dataset). Got data_files={data_files!r}, hub_name={hub_name!r}."
            )
        if hub_name is not None and format is not None:
            raise ValueError(
                f"FileTask {name!r}: format={format!r} only applies to data_files; the Hub "
                f"dataset {hub_name!r} says its own format. Remove format."
            )
        if validation_size < 1:
            raise ValueError(
                f"FileTask {name!r}: validation_size must be >= 1. Got {validation_size!r}."
            )
        if max_train_samples is not None and max_train_samples < 1:
            raise ValueError(
                f"FileTask {name!r}: max_train_samples must be None or >= 1. "
                f"Got {max_train_samples!r}."
            )
        self._template_fields = _template_fields(name, prompt_template)
        self.name = name
        self.data_files = data_files
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.format = format
        self.train_split = train_split
        self.validation_split = validation_split
        self.validation_size = validation_size
        self.column_mapping = dict(column_mapping or {})
        self.prompt_template = prompt_template
        self.reward = reward
        self.max_train_samples = max_train_samples
        self.seed = seed
        self.cache_dir = cache_dir
        self._files: dict[str, list[str]] = {}
        self._format: str = format or "json"

    def __repr__(self) -> str:
        return f"FileTask(name={self.name!r}, {self._source()})"

    def load(self) -> Task:
        """Read, split, map and check the data.

        Returns:
            The task; its columns are ``prompt``, ``answer`` and every other source column.
        """
        raw = self._load_raw()
        if self.train_split not in raw:
            raise ValueError(
                f"FileTask {self.name!r}: no split {self.train_split!r} in {self._source()}. "
                f"Splits found: {list(raw)}. Set train_split to one of them."
            )
        train = raw[self.train_split]
        if len(train) == 0:
            raise ValueError(
                f"FileTask {self.name!r}: the {self.train_split!r} split of {self._source()} "
                f"is empty. Check the file contents."
            )
        train = _with_row_numbers(self._prepare(train, self.train_split))
        validation_raw = self.train_split
        if self.validation_split is not None and self.validation_split in raw:
            validation = _with_row_numbers(
                self._prepare(raw[self.validation_split], self.validation_split)
            )
            validation_raw = self.validation_split
        else:
            train, validation = self._carve_validation(train, list(raw))
        if self.max_train_samples is not None and len(train) > self.max_train_samples:
            train = train.shuffle(seed=self.seed).select(range(self.max_train_samples))
        origins = RowOrigins(
            self._files if self.hub_name is None else {},
            self._format,
            {
                "train": (self.train_split, column_values(train, _ROW)),
                "validation": (validation_raw, column_values(validation, _ROW)),
            },
        )
        task = Task(
            self.name,
            train=train.remove_columns(_ROW),
            validation=validation.remove_columns(_ROW),
            reward=self.reward,
            describe_row=origins,
        )
        check_rows(task)
        return task

    def _source(self) -> str:
        if self.hub_name is not None:
            return f"hub_name={self.hub_name!r}, hub_config={self.hub_config!r}"
        return f"data_files={self.data_files!r}"

    def _load_raw(self) -> datasets.DatasetDict:
        if self.hub_name is not None:
            return self._load_hub(self.hub_name)
        files = split_files(self.data_files, self.train_split)
        for paths in files.values():
            for path in paths:
                check_exists(self.name, path)
        fmt = self.format or infer_format(self.name, [p for ps in files.values() for p in ps])
        self._files, self._format = files, fmt
        check_utf8(f"FileTask {self.name!r}", files, fmt)
        try:
            loaded = datasets.load_dataset(fmt, data_files=files, cache_dir=self.cache_dir)
        except Exception as err:
            bad_lines = (
                [find_bad_json_line(p) for p in expand([p for ps in files.values() for p in ps])]
                if fmt == "json"
                else []
            )
            bad = next((b for b in bad_lines if b is not None), None)
            if bad is not None:
                raise ValueError(
                    f"FileTask {self.name!r}: datasets could not read {files} as {fmt!r}: {bad}. "
                    f"Fix or delete that line (each line must be one JSON object of columns)."
                ) from err
            raise ValueError(
                f"FileTask {self.name!r}: datasets could not read {files} as {fmt!r}: "
                f"{type(err).__name__}: {err}. Check that the files are valid {fmt} with at least "
                f"one row, or pass the right format=."
            ) from err
        assert isinstance(loaded, datasets.DatasetDict)  # no split= argument was passed
        return loaded

    def _load_hub(self, hub_name: str) -> datasets.DatasetDict:
        try:
            loaded = datasets.load_dataset(hub_name, self.hub_config, cache_dir=self.cache_dir)
        except Exception as err:
            offline = [v for v in _OFFLINE_VARS if _truthy(os.environ.get(v))]
            if not offline and not isinstance(err, ConnectionError):
                raise
            settings = " and ".join(f"{v}={os.environ[v]}" for v in offline)
            why = f"{settings} {'is' if len(offline) == 1 else 'are'} set" if offline else str(err)
            raise ConnectionError(
                f"FileTask {self.name!r}: cannot load Hub dataset {hub_name!r}: the Hugging Face "
                f"Hub is unreachable ({why}) and the dataset is not in the local cache. Download "
                f"it where there is network (or unset the offline variables), or pass local "
                f"files instead: FileTask(name={self.name!r}, data_files='path/to/train.jsonl')."
            ) from err
        if not isinstance(loaded, datasets.DatasetDict):
            raise TypeError(
                f"FileTask {self.name!r}: expected a DatasetDict from Hub dataset {hub_name!r}, "
                f"got {type(loaded).__name__} (streaming datasets are not supported)."
            )
        return loaded

    def _carve_validation(
        self, train: datasets.Dataset, splits: list[str]
    ) -> tuple[datasets.Dataset, datasets.Dataset]:
        if len(train) <= self.validation_size:
            raise ValueError(
                f"FileTask {self.name!r}: no validation split (splits found: {splits}), and "
                f"the {len(train)} train rows are too few to carve validation_size="
                f"{self.validation_size} rows from. Lower validation_size or pass a validation "
                f"split, e.g. data_files={{'train': ..., 'validation': ...}}."
            )
        _log.info(
            "FileTask %r: no %r split among %s; using %d random train rows (seed %d) instead.",
            self.name,
            self.validation_split,
            splits,
            self.validation_size,
            self.seed,
        )
        parts = train.train_test_split(test_size=self.validation_size, seed=self.seed)
        return parts["train"], parts["test"]

    def _prepare(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        found = dataset.column_names
        missing = [c for c in self.column_mapping if c not in found]
        if missing:
            raise ValueError(
                f"FileTask {self.name!r}: column_mapping names columns {missing} that are not in "
                f"the data. Columns found: {found}. Fix the keys of column_mapping."
            )
        clashes = [
            t for s, t in self.column_mapping.items() if t in found and t not in self.column_mapping
        ]
        if clashes:
            raise ValueError(
                f"FileTask {self.name!r}: column_mapping renames onto {clashes}, which already "
                f"exist. Columns found: {found}. Map the existing column too, or rename elsewhere."
            )
        dataset = dataset.rename_columns(self.column_mapping)
        if self.prompt_template is not None:
            dataset = self._apply_template(dataset, self.prompt_template)
        for column in ("prompt", "answer"):
            if column not in dataset.column_names:
                raise ValueError(
                    f"FileTask {self.name!r}: no {column!r} column after column_mapping="
                    f"{self.column_mapping}. Columns found: {found}. Map one of them, e.g. "
                    f"column_mapping={self._suggest_mapping(found, column)}"
                    + (", or build it with prompt_template." if column == "prompt" else ".")
                )
            feature = dataset.features[column]
            # large_string (CSV) and numbers (CSV, JSON) become plain strings.
            if isinstance(feature, datasets.Value) and feature.dtype != "string":
                dataset = dataset.cast_column(column, datasets.Value("string"))
            elif not isinstance(feature, datasets.Value):  # e.g. JSON mixing numbers and text
                dataset = self._stringify(dataset, column, split)
        return dataset

    def _stringify(self, dataset: datasets.Dataset, column: str, split: str) -> datasets.Dataset:
        """``column`` as strings (numbers become text); a list or object names its row."""
        values = column_values(dataset, column)
        for index, value in enumerate(values):
            if value is None or (
                isinstance(value, (str, int, float)) and not isinstance(value, bool)
            ):
                continue
            where = RowOrigins(self._files, self._format, {split: (split, [index])})(split, 0)
            raise ValueError(
                f"FileTask {self.name!r}: {where} has a {type(value).__name__} as {column} "
                f"({_short(value)}); {column} must be text (numbers are read as text). Fix that "
                f"row, or map another column with column_mapping."
            )
        strings = [None if v is None else str(v) for v in values]
        return dataset.remove_columns(column).add_column(column, strings)

    def _suggest_mapping(self, found: list[str], column: str) -> dict[str, str]:
        """``column_mapping`` plus one unmapped source column renamed to ``column``."""
        free = [c for c in found if c not in self.column_mapping and c not in ("prompt", "answer")]
        return {**self.column_mapping, (free or ["<column>"])[0]: column}

    def _apply_template(self, dataset: datasets.Dataset, template: str) -> datasets.Dataset:
        aliases = dict(self.column_mapping)
        available = set(dataset.column_names) | set(aliases)
        unknown = sorted(set(self._template_fields) - available)
        if unknown:
            raise ValueError(
                f"FileTask {self.name!r}: prompt_template uses fields {unknown} that are not "
                f"columns. Columns available: {sorted(available)}. Template: {template!r}."
            )

        def build(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
            n = len(next(iter(batch.values())))
            rows = [{c: values[i] for c, values in batch.items()} for i in range(n)]
            for row in rows:
                row.update({source: row[target] for source, target in aliases.items()})
            return {"prompt": [template.format_map(row) for row in rows]}

        return dataset.map(build, batched=True, desc=f"prompt_template for {self.name}")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _with_row_numbers(dataset: datasets.Dataset) -> datasets.Dataset:
    """``dataset`` plus a column of its row numbers, so rows can be named after shuffles."""
    if _ROW in dataset.column_names:
        raise ValueError(f"The data has a column named {_ROW!r}, which FileTask reserves.")
    return dataset.add_column(_ROW, list(range(len(dataset))))


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _template_fields(name: str, template: str | None) -> list[str]:
    if template is None:
        return []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(
            f"FileTask {name!r}: prompt_template is not a valid format string ({err}). "
            f"Got {template!r}; write literal braces as '{{{{' and '}}}}'."
        ) from err
    bases = [f.split(".", 1)[0].split("[", 1)[0] for f in fields]
    if any(not b or b.isdigit() for b in bases):
        raise ValueError(
            f"FileTask {name!r}: prompt_template fields must name columns, like '{{question}}'. "
            f"Got {template!r}."
        )
    return bases
