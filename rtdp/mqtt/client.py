"""One MQTT connection driven by an asyncio event loop: the viewer's, the bridge's and the emulator's.

paho is driven from the loop (as aiomqtt does): its socket is watched with add_reader/add_writer,
loop_misc (keepalive pings, the ping-timeout check) runs on a timer, and reconnecting with back-off is our
own task. So PUBACKs and messages are handled on the loop thread and resolve futures directly: no network
thread contending for the GIL and no cross-thread wake per message. Every paho call happens on that
thread; an owner on another thread crosses over explicitly (rtdp.mqtt.loopthread).

I/O goes through rtdp.mqtt.internals: one recv() feeds many packets (PublishReader), and the packets queued
in one loop iteration leave in one send() (paho would make a syscall per packet).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from rtdp.errors import RtdpError
from rtdp.logs import RateLimitedLog
from rtdp.mqtt import internals
from rtdp.mqtt.endpoint import Endpoint, make_client
from rtdp.mqtt.internals import Publish

log = logging.getLogger("rtdp.mqtt")

KEEPALIVE = 30
# Seconds between loop_misc() calls (keepalive pings and the ping-timeout check).
MISC_INTERVAL = 1.0
# The reconnect policy: back-off doubling from RECONNECT_MIN to RECONNECT_MAX, back to the minimum once a
# connection was up.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 10.0
# How long a clean stop may block to hand the last packets (acks, notices, DISCONNECT) to the kernel.
CLOSE_SEND_TIMEOUT = 5.0


class MqttError(RtdpError):
    """The MQTT layer's errors: a publish paho refused, or a connection lost while waiting for a PUBACK."""

    status = 503


class PublishRefused(MqttError):
    """paho did not take the publish (its queue is full, or no connection and nothing is kept for one)."""


class ConnectionLost(MqttError):
    """The connection dropped before the broker acknowledged; the publish is forgotten (`resend=False`)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a client subscribes to on every connect, and who gets the messages (on the loop thread, as one
    list per read). With `manual_ack` the owner acknowledges QoS 1 messages (`Client.ack`); otherwise the
    client does, right after `deliver` returned."""

    topic_filter: str
    deliver: Callable[[list[Publish]], None]
    qos: int = 1
    manual_ack: bool = False


class Client:
    """One paho client, its connection supervised on the event loop that `start()` runs on.

    `publish()` returns a future resolved at the broker's PUBACK. With `resend=True` (the bridge, the
    emulator) QoS 1 publishes outlive a disconnect: paho keeps those it sent (and sends them again after
    reconnecting), the client those made while not connected (up to `max_queued` in all), in order. With
    `resend=False` (the viewer) a disconnect fails every one still unacknowledged with ConnectionLost, paho
    forgets them, and nothing is taken while not connected: nothing is sent behind a caller's back after
    it was told no.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        clean_session: bool = True,
        max_inflight: int = 100,
        max_queued: int = 0,
        resend: bool = True,
        subscription: Subscription | None = None,
        keepalive: int = KEEPALIVE,
        name: str = "mqtt",
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_subscribe: Callable[[bool], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.name = name
        self.keepalive = keepalive
        self.resend = resend
        self.max_queued = max_queued
        self.subscription = subscription
        self._subscribe = True
        # Set while connected (CONNACK accepted): read or waited on from any thread.
        self.up = threading.Event()
        # Bumped at every accepted CONNACK: a message id belongs to the connection that delivered it.
        self.generation = 0
        self._on_connect_hook = on_connect
        self._on_disconnect_hook = on_disconnect
        self._on_subscribe_hook = on_subscribe
        self._ratelog = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._socket_closed: asyncio.Event | None = None
        self._out = bytearray()
        self._writing = False
        # QoS 1 publishes awaiting their PUBACK, by message id. A future its caller gave up on (timed out,
        # cancelled) stays until the PUBACK: paho still holds the message, so it counts in `outstanding`.
        self._acks: dict[int, asyncio.Future[None]] = {}
        # QoS 1 publishes made while not connected (resend): handed to paho after its CONNACK handling.
        # paho would send one made between its CONNECT and the CONNACK at once, and one made before the
        # socket existed only after the CONNACK: out of order.
        self._backlog: deque[tuple[str, bytes, bool, asyncio.Future[None]]] = deque()
        self.paho = make_client(
            endpoint,
            client_id,
            clean_session=clean_session,
            manual_ack=subscription is not None and subscription.manual_ack,
            max_inflight=max_inflight,
        )
        if max_queued:
            self.paho.max_queued_messages_set(max_queued)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_publish = self._on_publish
        self.paho.on_message = self._on_message
        self.paho.on_socket_open = self._on_socket_open
        self.paho.on_socket_close = self._on_socket_close
        self.paho.on_socket_register_write = self._on_socket_register_write
        self.paho.on_socket_unregister_write = self._on_socket_unregister_write
        internals.read_publishes(self.paho, self._deliver)
        internals.buffer_sends(self.paho, self._buffer_send)

    @property
    def outstanding(self) -> int:
        """QoS 1 publishes paho holds until their PUBACK (message ids wrap at 65,535: owners bound this)."""
        return len(self._acks) + len(self._backlog)

    # -- the owner's side (on the loop thread) ---------------------------------------------------------

    def start(self) -> None:
        """Begin connecting (and reconnecting) in a task on the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._socket_closed = asyncio.Event()
        self._stopping = False
        self._supervisor = loop.create_task(self._supervise(), name=f"rtdp-{self.name}-mqtt")

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    async def stop(self, drain: float = 0.0) -> None:
        """Disconnect cleanly. While connected, first wait up to `drain` seconds for the PUBACKs of what
        was published: the broker has then read everything sent before (acks included), which a socket
        closed with unread data (a TCP reset) could make it discard."""
        if drain > 0 and self.connected and self._acks:
            await asyncio.wait(list(self._acks.values()), timeout=drain)
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        if self.paho.socket() is not None:
            self.paho.disconnect()
            # paho closes the socket itself once the DISCONNECT packet is written (into our buffer, which
            # _on_socket_close sends).
            self.paho.loop_write()
        self._close_socket()
        self._fail_all()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Queue a publish; the future is resolved at its PUBACK (at once for QoS 0). PublishRefused if paho
        did not take it."""
        loop = self._loop
        assert loop is not None, "start() first"
        future: asyncio.Future[None] = loop.create_future()
        if self.connected:
            return self._send(topic, payload, qos, retain, future)
        if not self.resend or qos == 0:
            raise PublishRefused(f"publish to {topic} failed: not connected", topic=topic)
        if self.max_queued and self.outstanding >= self.max_queued:
            raise PublishRefused(f"publish to {topic} failed: {self.max_queued} publishes wait already", topic=topic)
        self._backlog.append((topic, payload, retain, future))
        return future

    def _send(
        self, topic: str, payload: bytes, qos: int, retain: bool, future: asyncio.Future[None]
    ) -> asyncio.Future[None]:
        # With on_socket_register_write set, paho only queues here: the PUBACK can only arrive later,
        # through loop_read on this thread, so registering the future after publish() returns is safe.
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        # NO_CONN at QoS 1: kept by paho for the next connection, which is what `resend` asks for.
        if rc != mqtt.MQTT_ERR_SUCCESS and not (rc == mqtt.MQTT_ERR_NO_CONN and qos > 0 and self.resend):
            if qos > 0 and rc == mqtt.MQTT_ERR_NO_CONN:
                self.paho.drop_out_messages()  # nothing of ours may wait for a connection (resend=False)
            raise PublishRefused(f"publish to {topic} failed: {mqtt.error_string(rc)}", topic=topic)
        if qos == 0:
            future.set_result(None)
        else:
            self._acks[info.mid] = future
        return future

    def unsubscribe(self) -> None:
        """Leave the subscription, now and on every later connect; messages the broker queued for this
        session before still arrive (a bridge retiring its session, bridge.service)."""
        self._subscribe = False
        if self.subscription is not None and self.connected:
            self.paho.unsubscribe(self.subscription.topic_filter)

    def ack(self, mids: list[int], generation: int) -> None:
        """Acknowledge QoS 1 messages (manual acks) delivered by connection `generation`, in one packet. After
        a reconnect their ids mean nothing: the broker sends those messages again."""
        if mids and self.connected and generation == self.generation:
            internals.send_pubacks(self.paho, mids)

    # -- connection supervision -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        closed = self._socket_closed
        assert closed is not None
        delay = RECONNECT_MIN
        while not self._stopping:
            closed.clear()
            try:
                # Blocking (name resolution, TCP connect): off the loop. Socket callbacks fired meanwhile
                # in that thread are ignored; the socket is registered below, on the loop.
                await loop.run_in_executor(None, self._connect)
            except (OSError, ValueError) as exc:
                self._ratelog.log(
                    logging.DEBUG, "connect", "%s: MQTT connect to %s:%s failed: %s",
                    self.name, self.endpoint.host, self.endpoint.port, exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            sock = self.paho.socket()
            if sock is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            loop.add_reader(sock, self._read)
            if self.paho.want_write():
                loop.add_writer(sock, self._write)
            generation = self.generation
            # Keepalive: paho pings, and closes the socket (-> _on_disconnect) when the broker is silent; a
            # CONNACK that never comes is caught the same way.
            while not closed.is_set():
                if self.paho.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    break
                try:
                    await asyncio.wait_for(closed.wait(), MISC_INTERVAL)
                except TimeoutError:
                    pass
            self._close_socket()
            if self.generation != generation:  # it was up: the next attempt comes soon
                delay = RECONNECT_MIN
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _connect(self) -> None:
        rc = self.paho.connect(self.endpoint.host, self.endpoint.port, keepalive=self.keepalive)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"connect: {mqtt.error_string(rc)}")

    def _read(self) -> None:
        self.paho.loop_read()
        # A TLS socket may hold decrypted bytes that the selector does not see.
        while (sock := self.paho.socket()) is not None and getattr(sock, "pending", _nothing)():
            self.paho.loop_read()

    def _write(self) -> None:
        self._writing = True
        try:
            self.paho.loop_write()
        finally:
            self._writing = False
        self._flush()

    def _buffer_send(self, data: bytes | bytearray) -> int:
        # Stands in for paho's socket send: collect, and let _flush() send once.
        if self.paho.socket() is None:
            raise ConnectionError("no socket")
        if not self._out and not self._writing and self._loop is not None and self._on_loop_thread():
            # paho wrote outside _write (its CONNACK handling resends that way): flush at this iteration's end.
            self._loop.call_soon(self._flush)
        self._out += data
        return len(data)

    def _flush(self, sock: Any = None) -> None:
        """Send what paho queued; what the socket does not take now waits for the next writable event."""
        sock = sock or self.paho.socket()
        if sock is None or not self._out:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # The reader sees the same broken connection and closes it through paho.
            log.debug("%s: MQTT send failed: %s", self.name, exc)
            self._out.clear()
            return
        del self._out[:sent]
        loop = self._loop
        if loop is None:
            return
        if self._out:
            loop.add_writer(sock, self._write)
        elif not self.paho.want_write():
            # paho unregistered itself once its queue was empty; a writer we added for our rest must go too.
            loop.remove_writer(sock)

    def _close_socket(self) -> None:
        if self.paho.socket() is not None:
            internals.close_socket(self.paho)
        # paho reports a disconnect only for the closes it decides on.
        if self.connected:
            self._on_disconnect(self.paho, None, None, "socket closed", None)

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _fail_all(self) -> None:
        """Without `resend`, the connection's end fails every publish still awaiting its PUBACK and paho
        forgets them: it would otherwise send them again after reconnecting."""
        if self.resend:
            return
        futures = list(self._acks.values())
        self._acks.clear()
        self.paho.drop_out_messages()
        for future in futures:
            if not future.done():
                future.set_exception(ConnectionLost("the MQTT broker connection was lost; retry later"))

    # -- paho callbacks: on the loop thread, except the socket ones during connect() (executor thread) --

    def _deliver(self, publishes: list[Publish]) -> None:
        subscription = self.subscription
        if subscription is not None:
            try:
                subscription.deliver(publishes)
            except Exception:  # noqa: BLE001 -- raising into paho mid-read would desynchronise its parser
                log.exception("%s: handling %d message(s) failed", self.name, len(publishes))
            if subscription.manual_ack:
                return
        internals.send_pubacks(self.paho, [p.mid for p in publishes if p.qos == 1])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Only what PublishReader leaves to paho: a QoS 2 publish (our subscriptions ask for QoS 1 at most).
        topic = internals.raw_topic(message)
        publish = Publish(topic, bytes(message.payload), message.mid, message.qos, bool(message.retain))
        self._deliver([publish])

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None and self._on_loop_thread():
            loop.add_reader(sock, self._read)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not self._on_loop_thread():
            # Only connect() closes from the executor, and only a socket that was already dropped.
            return
        if self._stopping and self._out:
            # paho closes right after writing DISCONNECT: hand the kernel all that precedes it (the last acks
            # and notices), blocking briefly, since this connection ends here.
            try:
                sock.settimeout(CLOSE_SEND_TIMEOUT)
                sock.sendall(self._out)
            except OSError as exc:
                log.debug("%s: MQTT send at close failed: %s", self.name, exc)
        else:
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
            self._ratelog.log(logging.WARNING, "refused", "%s: the MQTT broker refused the connection: %s",
                              self.name, reason)
            return
        self.generation += 1
        self.up.set()
        # Subscribe on every connect, even with a session present: a clean session forgets subscriptions,
        # and amqtt can lose a persistent one's (a CONNECT reusing our client id with a wrong password).
        subscription = self.subscription
        if subscription is not None and self._subscribe:
            result, _ = client.subscribe(subscription.topic_filter, qos=subscription.qos)
            if result != mqtt.MQTT_ERR_SUCCESS:
                log.error("%s: subscribe failed: %s", self.name, mqtt.error_string(result))
        log.info("%s: connected to MQTT %s:%s as %s", self.name, self.endpoint.host, self.endpoint.port,
                 self.client_id)
        if self._on_connect_hook is not None:
            self._on_connect_hook()
        if self._backlog and self._loop is not None:
            # After paho's own CONNACK handling, which sends again what it held from before.
            self._loop.call_soon(self._send_backlog)

    def _send_backlog(self) -> None:
        while self._backlog and self.connected:
            topic, payload, retain, future = self._backlog.popleft()
            try:
                self._send(topic, payload, 1, retain, future)
            except PublishRefused as exc:  # not expected: the backlog counts against paho's queue limit
                log.warning("%s: %s", self.name, exc.message)
                future.cancel()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        ok = not any(code.is_failure for code in codes)
        if not ok and self.subscription is not None:
            log.error("%s: the broker refused the subscription to %s", self.name, self.subscription.topic_filter)
        if self._on_subscribe_hook is not None:
            self._on_subscribe_hook(ok)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self.connected
        self.up.clear()
        self._fail_all()
        if was and not self._stopping:
            self._ratelog.log(logging.WARNING, "lost", "%s: lost the MQTT connection (%s); reconnecting",
                              self.name, reason)
        if self._on_disconnect_hook is not None:
            self._on_disconnect_hook(str(reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)


def _nothing() -> int:
    return 0
