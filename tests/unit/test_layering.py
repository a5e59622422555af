"""The package layering, checked by parsing every ``import`` under ``gradbal/`` (no imports run).

Rules (STYLE.md rule 1, issue 14):

* **Math packages** (``gradbal.objectives``, ``gradbal.gradstats``, ``gradbal.weighting``) import
  no ``lightning``/``pytorch_lightning`` and no gradbal package but their own. Today none of the
  three imports another one (weighting rules take plain tensors of statistics rather than
  gradstats types, objectives never measure gradients), so the rule is the strict one: a math
  package that needs another's type must take a tensor instead, or the rule is relaxed here on
  purpose, in review.
* **Callbacks** (``gradbal.callbacks``) import nothing from ``gradbal.modules`` or
  ``gradbal.datamodules``: they see a module or DataModule only through its duck-typed contract,
  so a user's own LightningModule works with them.
* **No reaching into another package's private module**: ``gradbal.x._y`` (a module whose name
  starts with ``_``) may be imported only from inside ``gradbal.x``. A piece two packages share
  is made public (or moved) instead.
* **No import cycle between the top-level modules** ``gradbal.cli`` and ``gradbal.entry``.

Imports inside functions and under ``if TYPE_CHECKING:`` count too: they are still dependencies.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gradbal

ROOT = Path(gradbal.__file__).parent
MATH = ("objectives", "gradstats", "weighting")
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")

#: ``(file, imported)`` pairs allowed to break the private-module rule, each with its reason.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from gradbal.x import _y` may name a private submodule.
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _all_imports(root: Path) -> list[tuple[str, str, int, str]]:
    """``(importer module, file, line, imported)`` over every ``.py`` file under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, imported in _imports(path):
            found.append((_module_name(path), str(path.relative_to(root.parent)), line, imported))
    return found


def _subpackage(module: str) -> str | None:
    """``gradbal.x.y`` -> ``x``; None for a top-level module such as ``gradbal.cli``."""
    parts = module.split(".")
    if parts[0] != "gradbal" or len(parts) < 2:
        return None
    return parts[1] if (ROOT / parts[1]).is_dir() else None


def math_violations(found: list[tuple[str, str, int, str]]) -> list[str]:
    bad = []
    for importer, file, line, imported in found:
        package = _subpackage(importer)
        if package not in MATH:
            continue
        top = imported.split(".")[0]
        if top in LIGHTNING:
            bad.append(f"{file}:{line} imports {imported} (math packages import no Lightning)")
        elif top == "gradbal" and _subpackage(imported) != package:
            bad.append(f"{file}:{line} imports {imported} (only gradbal.{package} itself)")
    return bad


def callback_violations(found: list[tuple[str, str, int, str]]) -> list[str]:
    return [
        f"{file}:{line} imports {imported} (callbacks see modules/DataModules by contract only)"
        for importer, file, line, imported in found
        if _subpackage(importer) == "callbacks"
        and _subpackage(imported) in ("modules", "datamodules")
    ]


def private_violations(found: list[tuple[str, str, int, str]]) -> list[str]:
    bad = []
    for importer, file, line, imported in found:
        parts = imported.split(".")
        if parts[0] != "gradbal" or len(parts) < 3:
            continue
        owner = parts[1]
        private = any(p.startswith("_") and not p.startswith("__") for p in parts[2:])
        # Only modules count: `from gradbal.x.y import _helper` may name a private function,
        # which is not this rule's business.
        is_module = (ROOT.joinpath(*parts[1:]).with_suffix(".py")).exists() or (
            ROOT.joinpath(*parts[1:]) / "__init__.py"
        ).exists()
        known = (file, imported) in KNOWN_PRIVATE_IMPORTS
        if private and is_module and _subpackage(importer) != owner and not known:
            bad.append(f"{file}:{line} imports {imported}, private to gradbal.{owner}")
    return bad


def cycle_violations(found: list[tuple[str, str, int, str]]) -> list[str]:
    edges = {(importer, imported) for importer, _, _, imported in found}
    if ("gradbal.cli", "gradbal.entry") in edges and ("gradbal.entry", "gradbal.cli") in edges:
        return ["gradbal.cli and gradbal.entry import each other"]
    return []


RULES = (math_violations, callback_violations, private_violations, cycle_violations)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_layering(rule):
    assert rule(_all_imports(ROOT)) == []


def test_math_packages_exist_and_are_parsed():
    """Guard against a rename that would make the math rule vacuous."""
    found = _all_imports(ROOT)
    for package in MATH:
        assert any(_subpackage(importer) == package for importer, *_ in found), package


@pytest.mark.parametrize(
    ("relative_path", "source", "rule"),
    [
        ("objectives/_probe.py", "import lightning.pytorch as pl\n", math_violations),
        ("weighting/_probe.py", "from gradbal.gradstats import capture\n", math_violations),
        ("gradstats/_probe.py", "from ..objectives import dpo\n", math_violations),
        (
            "callbacks/_probe.py",
            "from gradbal.modules.grpo import GRPOModule\n",
            callback_violations,
        ),
        (
            "callbacks/_probe.py",
            "from gradbal.datamodules import MultiTaskDataModule\n",
            callback_violations,
        ),
        (
            "modules/_probe.py",
            "from gradbal.callbacks._prerequisites import x\n",
            private_violations,
        ),
        ("modules/_probe.py", "from gradbal.callbacks import _prerequisites\n", private_violations),
    ],
)
def test_rules_catch_a_violating_import(tmp_path, relative_path, source, rule):
    """Each rule fails on a planted violation (the checks are not vacuous)."""
    fake = tmp_path / "gradbal"
    for package in (*MATH, "callbacks", "modules", "datamodules"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
        (fake / package / "dpo.py").write_text("")
    (fake / "callbacks" / "_prerequisites.py").write_text("")
    (fake / relative_path).write_text(source)
    global ROOT
    saved, ROOT = ROOT, fake
    try:
        assert rule(_all_imports(fake)) != []
    finally:
        ROOT = saved
