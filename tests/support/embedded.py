"""The embedded broker for sync tests: a background thread with its own event loop, on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from broker.intake import Sink
from broker.server import EmbeddedBroker
from rtdp.accounts import ServiceAccount
from rtdp.mqtt import Endpoint
from rtdp.settings import HostPort, Settings

T = TypeVar("T")


@dataclass(frozen=True)
class EmbeddedBrokerHandle:
    host: str
    port: int
    service: ServiceAccount
    broker: EmbeddedBroker  # .access has the counters; touch it only from the test thread for reading
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coroutine` on the broker's loop and return its result (or raise its error) here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def address(self) -> HostPort:
        return HostPort(self.host, self.port)

    def endpoint(self, username: str | None = None, password: str | None = None) -> Endpoint:
        return Endpoint(self.host, self.port, username, password)

    def service_endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port, self.service.username, self.service.password)


@contextmanager
def running_embedded_broker(
    settings: Settings,
    service: ServiceAccount,
    *,
    port: int = 0,
    intake: Sink | None = None,
    hash_pool: ThreadPoolExecutor | None = None,
) -> Iterator[EmbeddedBrokerHandle]:
    """Run the embedded broker against the already opened database; port 0 picks a free port.
    `intake` receives every permitted feeds/ publish and settles it (broker.intake); `hash_pool` hashes
    its password logins (as `rtdp serve` shares the viewer's)."""
    broker = EmbeddedBroker(settings, service, listen=HostPort("127.0.0.1", port), intake=intake, hash_pool=hash_pool)
    ready = threading.Event()
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await broker.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await broker.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="embedded-broker", daemon=True)
    thread.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the embedded broker did not start within 30 s")
        if failure:
            raise failure[0]
        yield EmbeddedBrokerHandle(broker.address.host, broker.address.port, service, broker, loop)
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
        if not thread.is_alive():
            loop.close()
