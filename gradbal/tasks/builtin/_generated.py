"""What every generated built-in task shares: its config is its fields, ``load`` draws the rows."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._splits import check_common, generate_splits
from gradbal.tasks.task import RewardFn, Task


class GeneratedTask:
    """Base of the generated built-in tasks: a subclass declares its fields and its row generator.

    A task is a ``@dataclass(eq=False)`` subclass whose fields are its constructor arguments
    (``name`` first; ``n_train``, ``n_val``, ``seed`` last), which gives it the typed
    ``__init__`` LightningCLI reads and the ``repr`` that echoes it (a field with
    ``repr=False`` is left out). It implements:

    * ``_sample(rng) -> row``: one row (``prompt``, ``answer`` and any extra columns);
    * ``_reward() -> RewardFn``: the reward, built once at construction so its argument checks
      run there;
    * ``_check()`` (optional): argument checks beyond the name and the sizes.

    :meth:`load` then draws ``n_val`` distinct validation rows and ``n_train`` train rows with
    :func:`~gradbal.tasks.builtin._splits.generate_splits`, salted with the name of the class
    that defines ``_sample`` (so two task kinds with one seed draw different rows).

    The base is deliberately not a dataclass: jsonargparse reads a class whose whole MRO is
    dataclasses as a plain group of fields (no ``class_path``), which would let YAML build the
    wrong chat task for :class:`~gradbal.tasks.ChatPreference`'s ``source``.

    Attributes:
        reward: The task's reward (from ``_reward``).
    """

    name: str
    n_train: int
    n_val: int
    seed: int
    reward: RewardFn

    def __post_init__(self) -> None:
        check_common(type(self).__name__, self.name, self.n_train, self.n_val)
        self._check()
        self.reward = self._reward()

    def _check(self) -> None:
        """Validate the task's own fields (raise ``ValueError`` saying how to fix them)."""

    def _reward(self) -> RewardFn:
        raise NotImplementedError(f"{type(self).__name__} must implement _reward().")

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement _sample(rng).")

    def load(self) -> Task:
        """Generate the splits; the columns are those of the rows ``_sample`` draws.

        Raises:
            ValueError: If there are too few distinct prompts for ``n_val``, or too few outside
                the validation split for ``n_train``.
        """
        salt = next(c.__name__ for c in type(self).__mro__ if "_sample" in vars(c))
        train, validation = generate_splits(
            self.name,
            self._sample,
            n_train=self.n_train,
            n_val=self.n_val,
            seed=self.seed,
            salt=salt,
        )
        return Task(self.name, train=train, validation=validation, reward=self.reward)
