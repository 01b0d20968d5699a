"""The subprocesses of fault tests and benchmarks: SIGKILL (a crash), SIGTERM (a clean stop), and the
connections one holds."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import psutil


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


def established(pid: int, port: int) -> int:
    """Connections process `pid` holds open on its local `port` (a viewer's streams); 0 once it is gone."""
    try:
        return sum(1 for c in psutil.Process(pid).net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    except psutil.NoSuchProcess:
        return 0
