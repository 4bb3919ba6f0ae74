"""Crash a training command on purpose: start it, SIGKILL it with its whole process group once a condition holds.

The process group matters for multi-process runs: the launcher and every worker die together, as
they would when a machine or a scheduler kills the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence


def kill_when(cmd: Sequence[str], env: Mapping[str, str], ready: Callable[[], bool], what: str,
              timeout_s: float = 180) -> None:
    """Run ``cmd``; once ``ready()`` is true, SIGKILL its process group. Fails if it exits or times out first."""
    proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.time() < deadline, f"no {what} within {timeout_s} s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
