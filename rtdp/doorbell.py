"""A thread's way to run callbacks on an event loop, waking it without holding the GIL.

`loop.call_soon_threadsafe` wakes the loop with a write to its wake-up descriptor made while the calling
thread holds the GIL. On a busy machine the woken loop thread often takes the calling thread's core at
that write, and at once waits for the GIL that thread still holds: py-spy on `rtdp serve` under 4 QoS 1
publishers found the writer thread's one `call_soon_threadsafe` per batch (the batch's acks) at 13% of the
process's GIL-holding samples, about 200 microseconds a call, though the call itself takes a few. Here
the wake-up is an `os.write` to a pipe the loop watches, and `os.write` lets the GIL go around the
system call: the loop thread can run at once.

Callbacks run in the order rung, on the loop, from the loop's reader callback. One byte in the pipe at
a time at most: a ring while one is pending only queues its callback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable
from typing import Any


class Doorbell:
    """Made on the loop (`Doorbell(loop)`); `ring` from any thread; `close` on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = collections.deque()
        self._pending = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._closed = False
        loop.add_reader(self._read_fd, self._answer)

    def ring(self, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback(*args)` on the loop soon. From any thread; never blocks. After `close`, nothing."""
        if self._closed:
            return
        self._calls.append((callback, args))
        if not self._pending:
            self._pending = True
            with contextlib.suppress(BlockingIOError, OSError):  # full (a byte is there already) or closed
                os.write(self._write_fd, b"\0")

    def _answer(self) -> None:
        # The byte first, then the flag, then the calls: a ring before the flag is cleared only queues (and
        # is run below), a ring after it writes a byte of its own (the loop wakes once more and may find
        # nothing). Cleared before the read, a ring's byte could be read here and its flag stay set: no
        # ring would write again.
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._read_fd, 4096)
        self._pending = False
        self._run()

    def _run(self) -> None:
        calls = self._calls
        while calls:
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 -- as the loop does for a failed callback: report, go on
                self._loop.call_exception_handler({"message": "doorbell callback failed", "exception": exc})

    def close(self) -> None:
        """Run what was rung, stop watching the pipe and close it. On the loop."""
        if self._closed:
            return
        self._closed = True
        self._run()
        with contextlib.suppress(RuntimeError, ValueError):  # the loop closed already
            self._loop.remove_reader(self._read_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
