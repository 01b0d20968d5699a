"""An event loop on a thread of its own, for an MQTT client whose owner is synchronous (the bridge, whose
writer is a thread; the emulator).

The boundary is explicit: the owner's thread never calls paho. `call(fn, *args)` hands work to the loop
without waiting (call_soon_threadsafe: the bridge's acks and notices, in order); `run(fn, *args)` and
`run_async(coroutine)` wait for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from rtdp import eventloop

T = TypeVar("T")

START_TIMEOUT = 10.0


class LoopThread:
    def __init__(self, name: str, loop: str = "auto") -> None:
        self.name = name
        self.loop = eventloop.new_loop(loop)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        running = threading.Event()
        self.loop.call_soon(running.set)
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        if not running.wait(START_TIMEOUT):
            raise RuntimeError(f"{self.name}: the event loop did not start")

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` on the loop soon; calls keep their order. Dropped once the loop is closed."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run `fn(*args)` on the loop and return its result (or raise its exception) here."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the caller's thread
                    future.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return future.result(timeout)

    def run_async(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and return its result here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop (after what was handed to it), end the thread, close the loop."""
        thread = self._thread
        if thread is None or self.loop.is_closed():
            return
        # The executor (the client's connect() calls) is shut down on the loop's own thread: the caller's
        # thread may be running a loop of its own, where run_until_complete would refuse.
        self.run_async(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join()
        self.loop.close()
