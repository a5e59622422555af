"""Python function: ``py f(2)=15 f(3)=20 f(6)=35:`` -> ``def f(x): return x*5+5``, unit-tested."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.code_reward import UnitTestReward

__all__ = ["PythonFunction"]


@dataclass(eq=False)
class PythonFunction(GeneratedTask):
    """Write a Python function from examples; the reward runs unit tests in a sandbox.

    The code task of arXiv 2510.19178 in miniature. A row hides ``f(x) = x*a+b`` with ``a``
    uniform in ``[1, max_coef]`` and ``b`` in ``[-max_coef, max_coef]``, and draws
    ``n_shown + n_hidden`` distinct ``x`` in ``[0, max_x]``. The prompt shows the first
    ``n_shown`` as ``f(x)=y`` (sorted by ``x``); the ``answer`` column holds a reference
    one-liner ``def f(x): return x*a+b``; the ``tests`` column holds one ``assert`` per ``x``,
    shown and hidden, each also checking that the result is exactly an ``int`` (an object that
    compares equal to everything fails). Reward: :class:`~gradbal.tasks.UnitTestReward` with
    ``first_line_only=True``: the completion's first line and the tests run in
    :func:`~gradbal.tasks.run_untrusted`.

    Args:
        name: Task name.
        max_coef: Largest ``|a|`` and ``|b|`` (difficulty knob).
        max_x: Largest ``x`` (difficulty knob).
        n_shown: Examples in the prompt (two determine a line).
        n_hidden: Tested points not shown in the prompt.
        timeout_s: Wall-clock limit per completion, in seconds.
        memory_mb: Memory (address space) limit per completion, in MiB.
        max_workers: Completions scored at once, each in its own process.
        python: Interpreter for the sandbox; None means the running one (or, as root, a
            system one of the same version that ``nobody`` can run).
        allow_root: Let the reward run completions as root when the drop to ``nobody`` is
            impossible (see :class:`~gradbal.tasks.UnitTestReward`); off by default.
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Raises:
        ValueError: If an argument is out of range; in :meth:`load`, if there are too few
            distinct prompts for ``n_val``.
        RuntimeError: As :class:`~gradbal.tasks.UnitTestReward` (running as root without
            the drop to ``nobody``).

    Example::

        >>> task = PythonFunction(n_train=3, n_val=2).load()
        >>> row = task.validation[0]
        >>> row["prompt"], row["answer"]
        ('py f(2)=15 f(3)=20 f(6)=35:', 'def f(x): return x*5+5')
        >>> print(row["tests"], end="")
        assert type(f(2)) is int and f(2) == 15
        assert type(f(3)) is int and f(3) == 20
        assert type(f(6)) is int and f(6) == 35
        assert type(f(1)) is int and f(1) == 10
        assert type(f(9)) is int and f(9) == 50
        assert type(f(8)) is int and f(8) == 45
        >>> completions = ["def f(x): return 5*(x+1)\\npy", "def f(x): return x*5", "f=1/0"]
        >>> task.reward([row["prompt"]] * 3, completions, tests=[row["tests"]] * 3)
        [1.0, 0.0, 0.0]
    """

    name: str = "python_function"
    max_coef: int = 9
    max_x: int = 9
    n_shown: int = 3
    n_hidden: int = 3
    timeout_s: float = 2.0
    memory_mb: int = 256
    max_workers: int = 4
    python: str | None = None
    allow_root: bool = False
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_range("PythonFunction", "1", 1, "max_coef", self.max_coef, floor=1)
        check_range("PythonFunction", "1", 1, "n_shown", self.n_shown, floor=1)
        check_range("PythonFunction", "0", 0, "n_hidden", self.n_hidden, floor=0)
        if self.n_shown + self.n_hidden > self.max_x + 1:
            raise ValueError(
                f"PythonFunction: n_shown + n_hidden distinct points must fit in [0, max_x]. Got "
                f"n_shown={self.n_shown}, n_hidden={self.n_hidden}, max_x={self.max_x}; raise max_x to at least "
                f"{self.n_shown + self.n_hidden - 1}."
            )

    def _reward(self) -> UnitTestReward:
        return UnitTestReward(
            first_line_only=True,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_workers=self.max_workers,
            python=self.python,
            allow_root=self.allow_root,
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = rng.randint(1, self.max_coef)
        b = rng.randint(-self.max_coef, self.max_coef)
        xs = rng.sample(range(self.max_x + 1), self.n_shown + self.n_hidden)
        shown = sorted(xs[: self.n_shown])
        examples = " ".join(f"f({x})={x * a + b}" for x in shown)
        body = f"x*{a}" + (f"{b:+d}" if b else "")
        tests = "".join(
            f"assert type(f({x})) is int and f({x}) == {x * a + b}\n"
            for x in shown + xs[self.n_shown :]
        )
        return {"prompt": f"py {examples}:", "answer": f"def f(x): return {body}", "tests": tests}
