"""GGUF checkpoints: de-quantise once into a cached ``save_pretrained`` directory.

``transformers`` reads a GGUF file with ``from_pretrained(folder, gguf_file=name)`` (this needs
the ``gguf`` package), de-quantising every tensor to float, which takes seconds to a minute. The
result cannot be saved as it is (``save_pretrained`` refuses a model "quantized with gguf"), so
:func:`convert_gguf` rebuilds the model from its config without the GGUF quantisation entry,
loads the de-quantised weights, and writes model, tokenizer and generation config to a cache
folder. Later loads take the normal fast path, ``from_pretrained(folder)``.

The cache folder is keyed by the GGUF file's absolute path, size and modification time, so a
changed or moved file converts again. Conversion writes to a temporary folder and renames it
into place, so concurrent processes (e.g. DDP ranks) never read a half-written folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["GRADBAL_CACHE_ENV", "convert_gguf", "default_cache_dir", "gguf_cache_path"]

#: Environment variable naming the cache folder (default ``~/.cache/gradbal``).
GRADBAL_CACHE_ENV = "GRADBAL_CACHE"


def default_cache_dir() -> Path:
    """``$GRADBAL_CACHE`` if set, else ``~/.cache/gradbal`` (the only place the env is read)."""
    env = os.environ.get(GRADBAL_CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/gradbal").expanduser()


def gguf_cache_path(gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The folder a GGUF file converts into: ``<cache_dir>/gguf/<stem>-<key>``.

    ``key`` hashes the file's absolute path, size and modification time.

    Example::

        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "m.gguf"
        >>> _ = f.write_bytes(b"x")
        >>> p = gguf_cache_path(f, "/cache")
        >>> p.parent.as_posix(), p.name.startswith("m-"), p == gguf_cache_path(f, "/cache")
        ('/cache/gguf', True, True)
    """
    path = Path(gguf_path).expanduser().resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "gguf" / f"{path.stem}-{key}"


def _check_gguf_installed(gguf_path: Path) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"Loading the GGUF file {str(gguf_path)!r} needs the 'gguf' package, which is not "
            "installed. Run `pip install gguf==0.19.0` (or `pip install -e '.[real]'`; "
            "`make setup` does this)."
        ) from err


def convert_gguf(
    gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """De-quantise ``gguf_path`` to float32 into a cached folder and return the folder.

    Does nothing but return the folder if it already exists.

    Args:
        gguf_path: the ``.gguf`` file.
        cache_dir: the cache root (default :func:`default_cache_dir`).

    Returns:
        A folder that ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained`` read.

    Raises:
        FileNotFoundError: ``gguf_path`` does not exist.
        ImportError: the ``gguf`` package is missing (the message says how to install it).
    """
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"GGUF file {str(gguf_path)!r} does not exist (resolved to {str(path)!r}). "
            "Check gguf_file (and model_name_or_path, the folder it is in)."
        )
    target = gguf_cache_path(path, cache_dir if cache_dir is not None else default_cache_dir())
    if (target / "config.json").is_file():
        return target
    _check_gguf_installed(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain floats now
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent writer's success
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
