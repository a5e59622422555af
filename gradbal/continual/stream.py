"""An online class-incremental stream: tasks with disjoint classes, one per epoch, each sample once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import datasets
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from typing_extensions import override

from gradbal.tasks.data_files import check_exists, infer_format, split_files

__all__ = ["ClassIncrementalDataModule"]

Batch = dict[str, Any]


class _Split:
    """Features ``[N, F]`` float32 and labels ``[N]`` long of one split, kept in memory."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y


class _TaskStream(IterableDataset[Batch]):
    """Yields one task's batches per epoch (training) or the seen tasks' batches (evaluation)."""

    def __init__(self, datamodule: ClassIncrementalDataModule, stage: Literal["train", "eval"]):
        self.dm, self.stage = datamodule, stage

    def __iter__(self) -> Iterator[Batch]:
        if self.stage == "train":
            return self.dm._train_batches()
        return self.dm._eval_batches()


class ClassIncrementalDataModule(LightningDataModule):
    """Online class-incremental learning: a stream of tasks with disjoint classes.

    Task ``t`` holds the samples of the classes ``task_classes[t]``. Training epoch ``t`` is
    task ``t``'s training samples, shuffled (seeded), in batches of ``batch_size`` that never
    mix tasks: the trainer runs one epoch per task (``trainer.max_epochs`` must equal the number
    of tasks), each sample is trained on once, and Lightning's validation at the end of every
    epoch is the evaluation after each task. Batches carry the task index (task boundaries are
    known for training); validation batches carry it too, only so that accuracy can be reported
    per task: the model never sees it (no task id at test). Validation covers the test split of
    every task trained so far; ``test`` covers all tasks.

    Data, by default scikit-learn's handwritten digits (``sklearn.datasets.load_digits``, 1,797
    8x8 images, 10 classes, shipped inside scikit-learn: no download), split into train and test
    per class (stratified, seeded). Instead, any classification dataset ``datasets`` reads: a
    Hub dataset (``hub_name``), local files (``data_files``), or, from Python, an in-memory
    ``datasets.Dataset``/``DatasetDict`` (``dataset``). Features are the ``feature_columns``
    (numbers, lists or arrays of numbers, or images), each flattened and concatenated; labels are
    integers (or a ``ClassLabel``) in ``label_column``.

    The stream is a pure function of ``seed`` and the position in the current task, which is in
    :meth:`state_dict` (Lightning saves it in every checkpoint), so a run resumed mid-task
    continues with the next untrained batch.

    Args:
        task_classes: the class labels of each task, in task order; disjoint. Classes in no
            task are dropped. Example: ``[[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]``.
        batch_size: stream batch size (GSA and ER use 10).
        eval_batch_size: batch size of validation and test.
        dataset: in-memory data (Python only): a ``Dataset`` (split into train and test here)
            or a ``DatasetDict`` with ``train_split`` (and maybe ``test_split``).
        hub_name: a Hub dataset, e.g. ``"mnist"`` (needs network or the ``datasets`` cache).
        hub_config: the Hub dataset's configuration name.
        data_files: local JSON/JSONL, Parquet or CSV files: a path or list (train split) or a
            ``{split: paths}`` dict.
        format: file format of ``data_files``; inferred from the suffix by default.
        feature_columns: the input columns; ``None``: every column except ``label_column``.
        label_column: the integer class label column.
        train_split: the split to train on.
        test_split: the split to evaluate on; if ``None`` or absent, ``test_size`` of each
            class's training rows are held out (seeded).
        test_size: fraction held out per class when there is no test split, in ``(0, 1)``.
        standardize: subtract each feature's training mean and divide by its standard
            deviation (1 where it is 0). Computed on the whole training split once; these are
            preprocessing constants, like an image dataset's channel means.
        seed: seeds the train/test split and the order of each task's stream.
        cache_dir: ``datasets`` cache directory.

    Raises:
        ValueError: On overlapping or empty tasks, negative labels, several data sources,
            non-positive sizes; in :meth:`setup`, on missing columns or splits, a task without
            training or test samples, or ``trainer.max_epochs`` not equal to the number of
            tasks.

    Attributes:
        task_names: ``task_0``, ``task_1``, ...; batches carry indices into this list.
        task_classes: the class labels of each task.
        num_classes: ``1 + the largest class label`` (the classifier's output size).
        num_features: the length of a feature vector (after :meth:`setup`).

    Example::

        >>> dm = ClassIncrementalDataModule([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
        >>> dm.setup("fit")
        >>> dm.task_names[:2], dm.num_classes, dm.num_features
        (['task_0', 'task_1'], 10, 64)
        >>> batch = next(iter(dm.train_dataloader()))  # no trainer: epoch 0, task 0
        >>> sorted(batch), batch["x"].shape, sorted(set(batch["y"].tolist())) <= [0, 1]
        (['stream_step', 'task_id', 'x', 'y'], torch.Size([10, 64]), True)
    """

    def __init__(
        self,
        task_classes: list[list[int]],
        batch_size: int = 10,
        eval_batch_size: int = 256,
        dataset: datasets.Dataset | datasets.DatasetDict | None = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        format: Literal["json", "parquet", "csv"] | None = None,
        feature_columns: list[str] | None = None,
        label_column: str = "label",
        train_split: str = "train",
        test_split: str | None = "test",
        test_size: float = 0.25,
        standardize: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        _check_task_classes(task_classes)
        sources = {"dataset": dataset, "hub_name": hub_name, "data_files": data_files}
        given = [name for name, value in sources.items() if value is not None]
        if len(given) > 1:
            raise ValueError(
                f"ClassIncrementalDataModule: pass at most one data source, got {given}. Keep "
                "one (none means scikit-learn's digits)."
            )
        for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"ClassIncrementalDataModule: {arg} must be >= 1, got {value}.")
        if not 0 < test_size < 1:
            raise ValueError(
                f"ClassIncrementalDataModule: test_size is the held-out fraction per class and "
                f"must be in (0, 1). Got {test_size!r}."
            )
        self.task_classes = [list(map(int, classes)) for classes in task_classes]
        self.task_names = [f"task_{t}" for t in range(len(task_classes))]
        self.num_classes = 1 + max(c for classes in self.task_classes for c in classes)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.dataset, self.hub_name, self.hub_config = dataset, hub_name, hub_config
        self.data_files, self.format, self.cache_dir = data_files, format, cache_dir
        self.feature_columns, self.label_column = feature_columns, label_column
        self.train_split, self.test_split, self.test_size = train_split, test_split, test_size
        self.standardize, self.seed = standardize, seed
        self._train: list[_Split] = []  # per task, in stream order
        self._test: list[_Split] = []  # per task
        self._position = (0, 0)  # (task, batches of it handed to training)

    @property
    def num_features(self) -> int:
        """Length of one feature vector; known after :meth:`setup`."""
        if not self._train:
            raise RuntimeError(
                "ClassIncrementalDataModule.num_features is known after setup(); call "
                "datamodule.setup('fit') first (Trainer.fit does)."
            )
        return int(self._train[0].x.shape[1])

    # ---- loading -----------------------------------------------------------------------------

    @override
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if stage == "fit" and trainer is not None and trainer.max_epochs != len(self.task_names):
            raise RuntimeError(
                f"ClassIncrementalDataModule trains one task per epoch, but trainer.max_epochs="
                f"{trainer.max_epochs} and there are {len(self.task_names)} tasks. Set "
                f"trainer.max_epochs: {len(self.task_names)}."
            )
        if self._train:
            return
        (train_x, train_y), (test_x, test_y) = self._load()
        if self.standardize:
            mean, std = train_x.mean(dim=0), train_x.std(dim=0)
            std = torch.where(std > 0, std, 1.0)
            train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        order = torch.Generator().manual_seed(self.seed)
        for name, classes in zip(self.task_names, self.task_classes, strict=True):
            in_train = torch.isin(train_y, torch.tensor(classes))
            in_test = torch.isin(test_y, torch.tensor(classes))
            if not in_train.any() or not in_test.any():
                raise ValueError(
                    f"Task {name} (classes {classes}) has {int(in_train.sum())} training and "
                    f"{int(in_test.sum())} test samples; both must be > 0. Check task_classes "
                    f"against the labels present: {sorted(set(train_y.tolist()))}."
                )
            rows = torch.nonzero(in_train).flatten()
            rows = rows[torch.randperm(len(rows), generator=order)]
            self._train.append(_Split(train_x[rows], train_y[rows]))
            self._test.append(_Split(test_x[in_test], test_y[in_test]))

    def _load(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        splits = self._load_splits()
        if self.train_split not in splits:
            raise ValueError(
                f"No split {self.train_split!r} in the data; it has {sorted(splits)}. Set "
                "train_split to one of them."
            )
        train = self._to_tensors(splits[self.train_split])
        if self.test_split is not None and self.test_split in splits:
            return train, self._to_tensors(splits[self.test_split])
        return _stratified_split(*train, self.test_size, self.seed)

    def _load_splits(self) -> dict[str, datasets.Dataset]:
        if isinstance(self.dataset, datasets.DatasetDict):
            return dict(self.dataset)
        if isinstance(self.dataset, datasets.Dataset):
            return {self.train_split: self.dataset}
        if self.hub_name is not None:
            loaded = datasets.load_dataset(self.hub_name, self.hub_config, cache_dir=self.cache_dir)
            return dict(loaded)
        if self.data_files is not None:
            files = split_files(self.data_files, self.train_split)
            for paths in files.values():
                for path in paths:
                    check_exists("ClassIncrementalDataModule", path)
            fmt = self.format or infer_format(
                "ClassIncrementalDataModule", [p for ps in files.values() for p in ps]
            )
            loaded = datasets.load_dataset(fmt, data_files=files, cache_dir=self.cache_dir)
            return dict(loaded)
        return {self.train_split: _sklearn_digits(self.label_column)}

    def _to_tensors(self, split: datasets.Dataset) -> tuple[Tensor, Tensor]:
        columns = self.feature_columns or [c for c in split.column_names if c != self.label_column]
        missing = [c for c in [*columns, self.label_column] if c not in split.column_names]
        if missing or not columns:
            raise ValueError(
                f"Columns {missing or columns} are missing from the data, which has "
                f"{split.column_names}. Set feature_columns and label_column to existing ones."
            )
        table = split.with_format("numpy")
        features = [np.asarray(table[c], dtype=np.float32).reshape(len(split), -1) for c in columns]
        labels = np.asarray(table[self.label_column])
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"Label column {self.label_column!r} holds {labels.dtype}, not integers. Encode "
                f"it first, e.g. dataset.class_encode_column({self.label_column!r})."
            )
        x = torch.from_numpy(np.concatenate(features, axis=1))
        return x, torch.from_numpy(labels.astype(np.int64))

    # ---- streams -------------------------------------------------------------------------------

    def _current_task(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else min(trainer.current_epoch, len(self.task_names) - 1)

    def _train_batches(self) -> Iterator[Batch]:
        task = self._current_task()
        split = self._train[task]
        done_task, done = self._position
        # A resumed epoch starts after the last batch trained on before the checkpoint.
        first = done if done_task == task else 0
        for step in range(first, -(-len(split.y) // self.batch_size)):
            rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield _batch(split.x[rows], split.y[rows], task, step)

    def _eval_batches(self, tasks: range | None = None) -> Iterator[Batch]:
        for task in tasks if tasks is not None else range(self._current_task() + 1):
            split = self._test[task]
            for start in range(0, len(split.y), self.eval_batch_size):
                rows = slice(start, start + self.eval_batch_size)
                yield _batch(split.x[rows], split.y[rows], task, None)

    @override
    def train_dataloader(self) -> DataLoader[Batch]:
        if not self._train:
            self.setup("fit")
        # batch_size=None: the stream yields whole batches; in-process (its position is state).
        return DataLoader(_TaskStream(self, "train"), batch_size=None, num_workers=0)

    @override
    def val_dataloader(self) -> DataLoader[Batch]:
        if not self._train:
            self.setup("validate")
        return DataLoader(_TaskStream(self, "eval"), batch_size=None, num_workers=0)

    @override
    def test_dataloader(self) -> DataLoader[Batch]:
        if not self._train:
            self.setup("test")
        batches = list(self._eval_batches(range(len(self.task_names))))
        return DataLoader(batches, batch_size=None, num_workers=0)  # type: ignore[arg-type]

    @override
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and batch.get("stream_step") is not None:
            self._position = (int(batch["task_id"][0]), int(batch["stream_step"]) + 1)
        return batch

    # ---- checkpointing ------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"task_classes": self.task_classes, "position": list(self._position)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = [list(map(int, c)) for c in state_dict.get("task_classes", self.task_classes)]
        if saved != self.task_classes:
            raise ValueError(
                f"This checkpoint was made with task_classes {saved}, but the DataModule has "
                f"{self.task_classes}. Resume with the same task split."
            )
        task, done = state_dict.get("position", (0, 0))
        self._position = (int(task), int(done))


def _batch(x: Tensor, y: Tensor, task: int, step: int | None) -> Batch:
    return {
        "x": x,
        "y": y,
        "task_id": torch.full_like(y, task),
        "stream_step": step,
    }


def _check_task_classes(task_classes: list[list[int]]) -> None:
    flat = [c for classes in task_classes for c in classes]
    if not task_classes or any(not classes for classes in task_classes):
        raise ValueError(
            f"task_classes must be a non-empty list of non-empty class lists, one per task. "
            f"Got {task_classes!r}. Example: [[0, 1], [2, 3]]."
        )
    repeated = sorted({c for c in flat if flat.count(c) > 1})
    if repeated or min(flat) < 0:
        raise ValueError(
            f"Tasks must have disjoint, non-negative classes (class-incremental learning). Got "
            f"{task_classes!r} (repeated: {repeated})."
        )


def _stratified_split(
    x: Tensor, y: Tensor, test_size: float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Hold out ``round(test_size * n_c)`` random rows of every class ``c`` (at least 1)."""
    generator = torch.Generator().manual_seed(seed)
    is_test = torch.zeros(len(y), dtype=torch.bool)
    for label in torch.unique(y).tolist():
        rows = torch.nonzero(y == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        is_test[rows[: max(1, round(test_size * len(rows)))]] = True
    return (x[~is_test], y[~is_test]), (x[is_test], y[is_test])


def _sklearn_digits(label_column: str) -> datasets.Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The default data of ClassIncrementalDataModule is scikit-learn's digits. Install "
            "it with `pip install gradbal[continual]` (or scikit-learn), or pass hub_name, "
            "data_files or dataset."
        ) from error
    digits = load_digits()
    return datasets.Dataset.from_dict(
        {"pixels": digits.data.astype(np.float32), label_column: digits.target.astype(np.int64)}
    )
