"""The viewer's MQTT client: QoS 1 publishes with back-pressure, and the stored-points subscription.

paho is driven from the event loop (as aiomqtt does): the socket is watched with add_reader/add_writer,
keepalive runs in a task, and reconnecting with back-off is our own task. So PUBACKs and messages are
handled on the loop thread and resolve futures directly: no network thread contending for the GIL and
no cross-thread wake per message. paho's socket I/O goes through two buffers of ours: the packets queued in
one loop iteration leave in one send() (paho would make a syscall per packet), and one recv() feeds
several PUBACKs (paho reads each packet in three pieces). A publish is answered only once the broker
sent its PUBACK: at most `max_pending` wait at a time (paho's message ids wrap at 65,535 and would
silently lose points), beyond that, on disconnect or on timeout the caller gets Unavailable (503) -
never a success for a point the broker did not acknowledge. After a disconnect, the publishes answered
503 are not resent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from rtdp.errors import Unavailable
from rtdp.mqtt import Endpoint, make_client
from rtdp.notices import StoredEvent, decode_stored
from rtdp.topic import STORED_PREFIX, check_name
from rtdp.wire import BufferedSocket, buffer_reads

log = logging.getLogger(__name__)

STORED_FILTER = f"{STORED_PREFIX}/+"
KEEPALIVE = 30
# Seconds between loop_misc() calls (keepalive pings and the ping-timeout check).
MISC_INTERVAL = 1.0
RECONNECT_MIN = 0.5
RECONNECT_MAX = 10.0

StoredHandler = Callable[[str, list[StoredEvent]], None]


class Publisher:
    """QoS 1 publisher and stored-points subscriber; start() and stop() on the event loop that uses it."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        max_pending: int,
        timeout: float,
        on_stored: StoredHandler | None = None,
        watched: Callable[[str], bool] = lambda feed: True,
    ) -> None:
        self.endpoint = endpoint
        self.max_pending = max_pending
        self.timeout = timeout
        self.on_stored = on_stored
        # Notices for a feed no stream listens to are dropped unparsed: a stream that opens later
        # replays from the database (Last-Event-ID), and parsing cost the loop a tenth of rtdp serve.
        self.watched = watched
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        # Only touched on the loop thread: paho runs every callback there.
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._socket_closed: asyncio.Event | None = None
        self._out = bytearray()
        # Waited on from another thread by wait_connected().
        self._connected_event = threading.Event()
        # Mids whose caller gave up (timeout) but whose PUBACK paho still awaits: they stay taken until it
        # comes (paho keeps and resends them after a reconnect), so they count against max_pending.
        self._late: set[int] = set()
        # paho's own in-flight limit off (0): after every PUBACK it scans all its outgoing messages for one
        # to release, O(in flight) per point. max_pending bounds what paho holds instead (pending + late).
        self.client = make_client(endpoint, client_id, clean_session=True, max_inflight=0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_socket_register_write
        self.client.on_socket_unregister_write = self._on_socket_unregister_write
        # paho's reads through one 64 KiB recv (shared with the bridge); its sends collected and sent
        # once per loop iteration by the buffered version below.
        buffer_reads(self.client)
        self.client._sock_send = self._buffer_send  # type: ignore[method-assign,assignment]

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def outstanding(self) -> int:
        """Publishes paho still awaits a PUBACK for: what max_pending bounds (mids wrap at 65,535)."""
        return len(self._pending) + len(self._late)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin connecting (and reconnecting) in a task on `loop`; call from that loop's thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._socket_closed = asyncio.Event()
        self._supervisor = loop.create_task(self._supervise(), name="rtdp-viewer-mqtt")

    def wait_connected(self, timeout: float) -> bool:
        """Blocking (call from a thread other than the loop's): True once connected."""
        return self._connected_event.wait(timeout)

    async def stop(self) -> None:
        """Disconnect cleanly and fail whatever still waits (503)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        if self.client.socket() is not None:
            self.client.disconnect()
            # paho closes the socket itself once the DISCONNECT packet is written.
            self.client.loop_write()
        if self.client.socket() is not None:
            self._close_socket()
        self.connected = False
        self._connected_event.clear()
        self._fail_all()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it; Unavailable otherwise."""
        if not self.connected:
            raise Unavailable("the MQTT broker is not connected; retry later", retry_after=2)
        if len(self._pending) + len(self._late) >= self.max_pending:
            raise Unavailable("too many points awaiting the broker's acknowledgement; retry later", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # With on_socket_register_write set, paho only queues here: the PUBACK can only arrive later,
        # through loop_read on this thread, so registering the future after publish() returns is safe.
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Unavailable(f"publish failed: {mqtt.error_string(info.rc)}", retry_after=2)
        mid = info.mid
        self._pending[mid] = future
        # A timer on the future rather than asyncio.wait_for: no extra task or timeout scope per point.
        timer = loop.call_later(self.timeout, _time_out, future)
        try:
            await future
        finally:
            timer.cancel()
            # Timed out or cancelled: a late PUBACK for this mid is ignored, but the mid stays taken until it.
            if self._pending.get(mid) is future:
                del self._pending[mid]
                self._late.add(mid)

    # Connection supervision (event loop).

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        closed = self._socket_closed
        assert closed is not None
        delay = RECONNECT_MIN
        while not self._stopping:
            closed.clear()
            try:
                # Blocking (name resolution, TCP connect): off the loop. Socket callbacks fired meanwhile
                # in that thread are deferred; the socket is registered below, on the loop.
                await loop.run_in_executor(None, self._connect)
            except (OSError, ValueError) as exc:
                log.debug("MQTT connect to %s:%s failed: %s", self.endpoint.host, self.endpoint.port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            sock = self.client.socket()
            if sock is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self._watch(sock)
            if self.client.want_write():
                self._on_socket_register_write(self.client, None, sock)
            was_connected = False
            # Keepalive: paho pings, and closes the socket (-> _on_disconnect) when the broker is silent;
            # a CONNACK that never comes is caught the same way.
            while not closed.is_set():
                was_connected = was_connected or self.connected
                if self.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    break
                try:
                    await asyncio.wait_for(closed.wait(), MISC_INTERVAL)
                except TimeoutError:
                    pass
            if self.client.socket() is not None:
                self._close_socket()
            if was_connected or self.connected:
                delay = RECONNECT_MIN
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _connect(self) -> None:
        rc = self.client.connect(self.endpoint.host, self.endpoint.port, keepalive=KEEPALIVE)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"connect: {mqtt.error_string(rc)}")

    def _watch(self, sock: Any) -> None:
        loop = self._loop
        assert loop is not None
        loop.add_reader(sock, self._read)

    def _read(self) -> None:
        self.client.loop_read()
        # The socket may be drained while the read buffer still holds packets: the reader would not fire
        # again for them.
        while isinstance(sock := self.client.socket(), BufferedSocket) and sock.pending():
            self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()
        self._flush()

    def _buffer_send(self, data: bytes | bytearray) -> int:
        # Stands in for paho's Client._sock_send: collect, and let _flush() send once.
        if self.client.socket() is None:
            raise ConnectionError("no socket")
        self._out += data
        return len(data)

    def _flush(self, sock: Any = None) -> None:
        """Send what paho queued; what the socket does not take now waits for the next writable event."""
        sock = sock or self.client.socket()
        if sock is None or not self._out:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # The reader sees the same broken connection and closes it through paho.
            log.debug("MQTT send failed: %s", exc)
            self._out.clear()
            return
        del self._out[:sent]
        loop = self._loop
        if loop is None:
            return
        if self._out:
            loop.add_writer(sock, self._write)
        elif not self.client.want_write():
            # paho unregistered itself once its queue was empty; a writer we added for our rest must go too.
            loop.remove_writer(sock)

    def _close_socket(self) -> None:
        # Through paho, so its state and the callbacks (unregister, close, disconnect) stay consistent.
        self.client._sock_close()  # noqa: SLF001 -- paho has no public "drop the socket now"
        self._on_disconnect(self.client, None, None, "socket closed", None)

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _fail_all(self) -> None:
        """The connection is gone: every caller still waiting gets 503 now, and paho forgets their
        publishes (and the timed-out ones), which it would otherwise resend after reconnecting: a point
        answered 503 must not be stored later behind its caller's back (a retry without x would store
        it twice). One the broker read before the connection dropped may be stored all the same."""
        futures = list(self._pending.values())
        self._pending.clear()
        self._late.clear()
        # paho queues nothing else of ours (only these publishes are QoS 1): drop all it would resend.
        self.client.drop_out_messages()
        for future in futures:
            _fail(future)

    # paho callbacks: on the loop thread, except the socket ones during connect() (executor thread).

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._on_loop_thread():
            self._watch(sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if not self._on_loop_thread():
            # Only connect() closes from the executor, and only a socket that was already dropped.
            return
        # paho closes right after writing DISCONNECT: send it (best effort), and forget the rest.
        self._flush(sock)
        self._out.clear()
        loop.remove_reader(sock)
        loop.remove_writer(sock)
        if self._socket_closed is not None:
            self._socket_closed.set()

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None and self._on_loop_thread():
            loop.add_writer(sock, self._write)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._on_loop_thread():
            loop.remove_writer(sock)

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
        self._fail_all()
        if was and not self._stopping:
            log.warning("viewer lost the MQTT connection: %s", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        future = self._pending.pop(mid, None)
        self._late.discard(mid)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self.on_stored
        if handler is None:
            return
        feed = message.topic[len(STORED_PREFIX) + 1 :]
        if not self.watched(feed):
            return
        try:
            check_name(feed, "feed")
            events = decode_stored(message.payload)
        except Exception:  # noqa: BLE001 -- a bad message must never break the read loop
            log.warning("ignoring malformed message on %s", message.topic[:100])
            return
        if events:
            try:
                handler(feed, events)
            except Exception:  # noqa: BLE001 -- raising into paho mid-read would desynchronise its parser
                log.exception("stored-points handler failed for feed %s", feed)


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(Unavailable(
            "the MQTT broker did not acknowledge in time (the point may still be stored: a retry with the same x"
            " replaces it); retry later", retry_after=2))


def _fail(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(Unavailable("the MQTT broker connection was lost; retry later", retry_after=2))
