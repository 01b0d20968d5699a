"""Helpers every test level shares: free ports, readiness polling, skips that CI turns into failures."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

# The suite's own knobs (also RTDP_TEST_PG_* in postgres.py). rtdp's settings know nothing of them:
# they are read when the suite loads, then forget_suite_variables() takes them out of the environment,
# so neither the code under test nor the processes the suite starts see them.
SUITE_VARIABLES = ("RTDP_TEST_", "RTDP_UPDATE_SCREENSHOT")
# .ci/run sets this: a missing PostgreSQL, Mosquitto or Chromium must fail CI, not skip silently.
REQUIRE_ALL = os.environ.get("RTDP_TEST_REQUIRE_ALL", "") not in ("", "0", "false")
# Rewrite docs/graph.png (the README's picture) from the browser test instead of a temporary file.
UPDATE_SCREENSHOT = bool(os.environ.get("RTDP_UPDATE_SCREENSHOT"))


def forget_suite_variables() -> None:
    """Remove the suite's knobs from os.environ once read (tests/conftest.py, when the suite loads)."""
    for name in [name for name in os.environ if name.startswith(SUITE_VARIABLES)]:
        del os.environ[name]


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (RTDP_TEST_REQUIRE_ALL is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    wait_for(lambda: port_open(host, port), timeout, what=f"{host}:{port} to accept connections")
