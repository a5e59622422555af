"""The modules sandboxed code may import: an allowlist of top-level names, checked by the hook.

:data:`ALLOWED_MODULES` is what unit tests of function-writing tasks need, plus the internal
modules those import (found by importing each public one under an audit hook that records
``import`` events, in CPython 3.11, with additions that 3.12-3.14 import). Everything else
raises ``ImportError`` in the sandbox, *before* any file is looked up.

The audit hook (``bootstrap.py``) checks two kinds of ``import`` event:

* ``import x.y`` / ``__import__``: the event carries the module name and no file; the name's
  first component must be allowed. Modules already loaded at start-up (``sys``, ``os``,
  ``posix``, ``io``, ``_io``, ``marshal``, ``_imp`` ...) raise no event and stay reachable.
* loading an extension module (a shared object), by any route (``import``,
  ``importlib.util.spec_from_file_location``, ``ExtensionFileLoader``, ``imp.load_dynamic``,
  ``_imp.create_dynamic``): the event carries the name and the file. The *file* decides: it must
  sit directly in a directory of the interpreter's ``sys.path`` (the standard library's
  ``lib-dynload``), its name must start with ``<name>.``, and ``name`` (which picks the
  ``PyInit_<name>`` that runs) must be allowed and undotted. So a denied module loaded under a
  dotted alias (``spec_from_file_location("x.readline", ...)``) or a shared object written to
  the working directory is refused.

What the allowlist cannot cover: modules compiled into the interpreter (``sys.builtin_module_names``)
load through ``BuiltinImporter`` / ``_imp.create_builtin`` without any audit event. In Debian's
``python3.11`` that includes ``spwd`` (reads ``/etc/shadow`` as root), ``_posixsubprocess``
(spawns; seccomp stops it) and ``_socket`` (seccomp and the network namespace stop it). Only
the ``nobody_user`` layer keeps ``spwd`` from reading ``/etc/shadow``, which is why running as
root without it needs ``allow_root=True``.
"""

from __future__ import annotations

#: For the code: what function-writing tasks and their tests use.
PUBLIC_MODULES = frozenset(
    {
        "__future__", "abc", "array", "base64", "binascii", "bisect", "builtins", "calendar",
        "cmath", "codecs", "collections", "contextlib", "copy", "dataclasses", "datetime",
        "decimal", "difflib", "enum", "errno", "fractions", "functools", "graphlib", "hashlib",
        "heapq", "hmac", "io", "itertools", "json", "keyword", "math", "numbers", "operator",
        "os", "pprint", "queue", "random", "re", "reprlib", "secrets", "statistics", "string",
        "struct", "sys", "tempfile", "textwrap", "threading", "time", "traceback", "types",
        "typing", "unicodedata", "unittest", "warnings", "weakref", "zlib",
    }
)  # fmt: skip

#: What the public modules import (C accelerators, helpers), or what the interpreter imports to
#: encode text and print a traceback.
HELPER_MODULES = frozenset(
    {
        "_ast", "_bisect", "_blake2", "_collections", "_collections_abc", "_colorize",
        "_datetime", "_decimal", "_functools", "_hashlib", "_heapq", "_json", "_locale", "_md5",
        "_opcode", "_opcode_metadata", "_operator", "_py_warnings", "_pydatetime", "_pydecimal",
        "_pylong", "_queue", "_random", "_sha1", "_sha2", "_sha256", "_sha3", "_sha512", "_sre",
        "_stat", "_statistics", "_string", "_strptime", "_struct", "_thread", "_typing",
        "_warnings", "_weakref", "_weakrefset", "annotationlib", "argparse", "ast", "atexit",
        "copyreg",
        "dis", "encodings", "fnmatch", "genericpath", "gettext", "importlib", "inspect",
        "linecache", "locale", "opcode", "posixpath", "shutil", "signal", "stat", "token",
        "tokenize",
    }
)  # fmt: skip

#: Every top-level name the sandboxed code may import.
ALLOWED_MODULES = PUBLIC_MODULES | HELPER_MODULES
