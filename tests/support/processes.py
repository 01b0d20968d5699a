"""Ending the subprocesses of fault tests: SIGKILL (a crash) and SIGTERM (a clean stop)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def crash(process: subprocess.Popen[Any]) -> None:
    """SIGKILL, as a power cut or the OOM killer would end it, and reap it."""
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def terminate(process: subprocess.Popen[Any] | None, timeout: float = 30) -> int:
    """SIGTERM and wait: its exit status, 0 if it had already gone, -9 if it had to be killed."""
    if process is None or process.poll() is not None:
        return 0
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9
