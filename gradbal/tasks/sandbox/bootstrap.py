"""The script the sandboxed interpreter runs first: it installs the audit hook, then the code.

:data:`_BOOTSTRAP` is passed with ``python -c``; the code to run arrives on stdin. Its arguments
are the status pipe's descriptor, the working directory, the RLIMIT_NOFILE value and
``audit_hook`` (or ``-`` to skip the hook). The module policy is
:data:`~gradbal.tasks.sandbox.modules.ALLOWED_MODULES`, written into the script.
"""

from gradbal.tasks.sandbox.modules import ALLOWED_MODULES

# Runs in the child before the untrusted code (which it reads from stdin). Everything the hook
# uses is bound as a default argument or passed as an argument, never looked up in a namespace
# the untrusted code can change; replacing a function's __code__, or the hook's defaults, needs
# an audited setattr, which the hook denies. Paths are normalised lexically: the working
# directory holds no symlinks and creating one is denied.
_TEMPLATE = r"""
import os, sys

DENIED_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "os.chdir", "os.chmod", "os.chown", "os.chflags", "os.link",
    "os.symlink", "os.mknod", "os.setxattr", "os.removexattr", "os.unshare", "os.setns",
    "signal.pthread_kill", "subprocess.Popen", "resource.setrlimit", "resource.prlimit",
    "sys.addaudithook", "cpython.PyInterpreterState_New", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "webbrowser.open",
})
DENIED_PREFIXES = ("socket.", "ctypes.", "syslog.", "sqlite3.", "_winapi.", "winreg.")
ALLOWED_MODULES = frozenset(@ALLOWED_MODULES@)
PATH_EVENTS = frozenset({
    "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.truncate", "os.utime", "os.mkfifo",
})
LIST_EVENTS = frozenset({"os.listdir", "os.scandir"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def normpath(path, cwd, _type, _issub, _str, _bytes):
    kind = _type(path)
    if _issub(kind, _bytes):
        path = _bytes.decode(path, "utf-8", "surrogateescape")
    elif _issub(kind, _str):
        path = _str.__str__(path)
    else:
        return None
    if not _str.startswith(path, "/"):
        path = cwd + path
    parts = []
    for part in _str.split(path, "/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def make_hook(cwd):
    builtins = (type, issubclass, str, bytes)
    cwd = normpath(cwd, "/", *builtins) + "/"
    roots = tuple(r + "/" for r in (normpath(p, cwd, *builtins) for p in sys.path if p) if r)
    libdirs = frozenset(roots)  # where extension modules may be loaded from
    hook_code = [c for c in make_hook.__code__.co_consts if getattr(c, "co_name", "") == "hook"]

    def hook(event, args, _cwd=cwd, _readable=(cwd,) + roots, _norm=normpath, _b=builtins,
             _str=str, _type=type, _int=int, _getattr=getattr, _code=hook_code[0],
             _deny=PermissionError, _noimport=ImportError, _events=DENIED_EVENTS,
             _prefixes=DENIED_PREFIXES, _modules=ALLOWED_MODULES, _libdirs=libdirs,
             _paths=PATH_EVENTS, _lists=LIST_EVENTS, _wflags=WRITE_FLAGS):
        if event in _events or _str.startswith(event, _prefixes):
            raise _deny("sandbox: " + event + " is not allowed")
        if event == "import":
            name = _str.__str__(args[0])
            if args[1] is None:  # import statement, __import__: only the name is known yet
                if _str.partition(name, ".")[0] not in _modules:
                    raise _noimport("sandbox: import " + name + " is not allowed")
                return
            # A shared object is about to be loaded and its PyInit_<last part of name> run,
            # whatever the route (spec_from_file_location, ExtensionFileLoader, _imp): the file
            # must be the standard library's own for an allowed, undotted name.
            p = _norm(args[1], _cwd, *_b)
            if p is None:
                raise _noimport("sandbox: loading " + name + " from a non-str path is not allowed")
            head, _, base = _str.rpartition(p, "/")
            if (name not in _modules or head + "/" not in _libdirs
                    or _str.partition(base, ".")[0] != name):
                raise _noimport("sandbox: loading the extension module " + name + " from " + p
                                + " is not allowed")
        elif event == "open":
            path, mode, flags = args
            if _type(path) is _int:
                return
            p = _norm(path, _cwd, *_b)
            if p is None:
                raise _deny("sandbox: open() needs a str or bytes path")
            if _str.startswith(p + "/", _cwd):
                return
            if mode is None or flags & _wflags or _str.strip(_str.__str__(mode), "rbtU"):
                raise _deny("sandbox: writing " + p + " is not allowed (only the working "
                            "directory is writable)")
            if not _str.startswith(p + "/", _readable):
                raise _deny("sandbox: reading " + p + " is not allowed")
        elif event in _paths:
            for arg in args:
                p = _norm(arg, _cwd, *_b)
                if p is not None and not _str.startswith(p + "/", _cwd):
                    raise _deny("sandbox: " + event + " outside the working directory is not "
                                "allowed")
        elif event in _lists:
            p = _norm(args[0], _cwd, *_b)
            if p is not None and not _str.startswith(p + "/", _readable):
                raise _deny("sandbox: listing " + p + " is not allowed")
        elif event == "object.__setattr__" and (
            args[1] == "__code__"
            or (args[1] in ("__defaults__", "__kwdefaults__")
                and _getattr(args[0], "__code__", None) is _code)
        ):
            raise _deny("sandbox: replacing " + args[1] + " is not allowed here")

    return hook


def main():
    import resource

    code = sys.stdin.buffer.read()
    status_fd, cwd, max_open_files, layers = sys.argv[1:]
    del sys.argv[1:]
    # Set here rather than before exec: a low limit there could stop close_fds from closing
    # descriptors numbered above it on systems without close_range().
    n = int(max_open_files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    del sys.modules["resource"]  # not on the allowlist: importing it again raises the event
    status_fd = int(status_fd)
    if layers == "audit_hook":
        sys.addaudithook(make_hook(cwd))
        os.write(status_fd, b"audit_hook\n")
    os.close(status_fd)
    exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


main()
"""
_BOOTSTRAP = _TEMPLATE.replace("@ALLOWED_MODULES@", repr(sorted(ALLOWED_MODULES)))
