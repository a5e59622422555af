"""Run a multi-process command with a timeout that kills every process it started.

``subprocess.run(timeout=...)`` kills only the process it started; the ranks that process
launched (Lightning's launcher, ``mp.spawn``) would live on, waiting in a collective. Here the
command gets its own session and a timeout kills the whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def run_group(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as err_timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            message = f"{cmd} ran over {timeout} s; killed. stderr:\n{err[-4000:]}"
            raise AssertionError(message) from err_timeout
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
