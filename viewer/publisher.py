"""The viewer's MQTT client: QoS 1 publishes with back-pressure, and the stored-points subscription.

paho runs its network thread; callbacks only hand results to the event loop. A publish is answered
only once the broker sent its PUBACK: at most `max_pending` wait at a time (paho's message ids wrap
at 65,535 and would silently lose points), beyond that, on disconnect or on timeout the caller gets
Unavailable (503) - never a success for a point the broker did not acknowledge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from rtdp.errors import Unavailable
from rtdp.mqtt import Endpoint, make_client
from rtdp.topic import STORED_PREFIX, check_name
from viewer.hub import StoredEvent

log = logging.getLogger(__name__)

STORED_FILTER = f"{STORED_PREFIX}/+"

StoredHandler = Callable[[str, list[StoredEvent]], None]


def parse_stored(payload: bytes | bytearray) -> list[StoredEvent]:
    """The bridge's `[{"id","axis","x","y"}, ...]`; malformed elements are skipped."""
    document = json.loads(payload)
    events = []
    for item in document if isinstance(document, list) else ():
        try:
            events.append(StoredEvent(int(item["id"]), str(item["axis"]), float(item["x"]), float(item["y"])))
        except (KeyError, TypeError, ValueError):
            continue
    return events


class Publisher:
    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        max_pending: int,
        timeout: float,
        on_stored: StoredHandler | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_pending = max_pending
        self.timeout = timeout
        self.on_stored = on_stored
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Guards the three mid tables, shared by the event loop and paho's thread. Never held while
        # calling into paho: paho fires on_publish while holding its own locks.
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        # PUBACKs that arrived before publish() returned and the future was registered.
        self._early: set[int] = set()
        # Mids given up on (timeout, disconnect, failed publish): their late PUBACK is ignored.
        self._abandoned: set[int] = set()
        self._connected_event = threading.Event()
        self.client = make_client(endpoint, client_id, clean_session=True, max_inflight=max_pending)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected_event.wait(timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._fail_all()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it; Unavailable otherwise."""
        if not self.connected:
            raise Unavailable("the MQTT broker is not connected; retry later", retry_after=2)
        if len(self._pending) >= self.max_pending:
            raise Unavailable("too many points awaiting the broker's acknowledgement; retry later", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        info = self.client.publish(topic, payload, qos=1)
        mid = info.mid
        with self._lock:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                if mid in self._early:
                    self._early.discard(mid)
                else:
                    self._abandoned.add(mid)
                raise Unavailable(f"publish failed: {mqtt.error_string(info.rc)}", retry_after=2)
            if mid in self._early:
                self._early.discard(mid)
                return
            self._abandoned.discard(mid)
            self._pending[mid] = future
        try:
            await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise Unavailable("the MQTT broker did not acknowledge in time; retry later", retry_after=2) from None
        finally:
            with self._lock:
                if self._pending.get(mid) is future:
                    del self._pending[mid]
                    if not future.done():
                        self._abandoned.add(mid)

    def _fail_all(self) -> None:
        with self._lock:
            futures = list(self._pending.items())
            self._pending.clear()
            self._abandoned.update(mid for mid, _ in futures)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for _, future in futures:
            loop.call_soon_threadsafe(_fail, future)

    # paho callbacks (network thread): keep them tiny.

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connection refused: %s", reason)
            return
        self.connected = True
        self._connected_event.set()
        # Subscribe on every connect: a clean session forgets subscriptions.
        if self.on_stored is not None:
            client.subscribe(STORED_FILTER, qos=1)
        log.info("viewer connected to MQTT %s:%s", self.endpoint.host, self.endpoint.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        self._connected_event.clear()
        # A clean session drops what was in flight: those callers get 503 now, not after the timeout.
        self._fail_all()
        if was:
            log.warning("viewer lost the MQTT connection: %s", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                if mid in self._abandoned:
                    self._abandoned.discard(mid)
                else:
                    self._early.add(mid)
                return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_succeed, future)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler, loop = self.on_stored, self._loop
        if handler is None or loop is None or loop.is_closed():
            return
        feed = message.topic[len(STORED_PREFIX) + 1 :]
        try:
            check_name(feed, "feed")
            events = parse_stored(message.payload)
        except Exception:  # noqa: BLE001 -- a bad message must never kill paho's thread
            log.warning("ignoring malformed message on %s", message.topic[:100])
            return
        if events:
            loop.call_soon_threadsafe(handler, feed, events)


def _succeed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(Unavailable("the MQTT broker connection was lost; retry later", retry_after=2))
