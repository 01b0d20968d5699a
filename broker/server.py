"""The embedded MQTT broker: amqtt with rtdp's authentication and topic ACL, started and stopped
as one object, and `run(settings)` behind `rtdp broker`."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from amqtt.adapters import (
    ReaderAdapter,
    StreamReaderAdapter,
    StreamWriterAdapter,
    WebSocketsReader,
    WebSocketsWriter,
    WriterAdapter,
)
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.errors import BrokerError as AmqttBrokerError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id
from websockets.asyncio.server import ServerConnection

from broker.access import AccessControl, Memo, TopicAction, session_id, session_owner
from broker.acks import MAX_UNSETTLED, AckAfterSettleHandler, settle
from broker.delivery import DeliveryHandler
from broker.errors import BrokerError, PortInUse
from broker.fastpath import SLICE, FastHandler, FastPath, OfflineQueue, offline_queue
from broker.gate import GateCounter, PacketGate
from broker.intake import Sink, wanted
from broker.limits import ConnectionLimits, CopyBudget, refuse, shut
from broker.metrics import BrokerCollector
from broker.persistence import Persistence
from broker.subscriptions import Subscriptions
from rtdp.accounts import ServiceAccount
from rtdp.codec import Casts, Sample
from rtdp.errors import RtdpError, TooManyAttempts, Unavailable
from rtdp.handoff import Handoff
from rtdp.logs import RateLimitedLog
from rtdp.settings import HostPort, Settings
from rtdp.throttle import Throttle
from rtdp.topic import feed_of_filter

logger = logging.getLogger(__name__)

# Seconds the connections get to finish their disconnect when the broker stops.
SHUTDOWN_GRACE = 5.0

# Seconds a throttled CONNECT waits for its CONNACK 5: a guessing script gets one answer per this long
# per connection, and its connections count against the per-address cap meanwhile.
THROTTLED_DELAY = 1.0

_PUBLISHED_QOS = "rtdp.published_qos"  # a session attribute: the QoS of the message it is delivering
_THEN = "rtdp.then"  # a broadcast's key: called once it was fanned out (broker.persistence.HeldAck)
_SHARED = "rtdp.shared"  # a broadcast's key: the message object its offline sessions' queues share, per QoS


def broker_config(
    listen: HostPort, access: AccessControl, websocket: HostPort | None = None, session_expiry: float | None = None
) -> dict[str, Any]:
    """amqtt's config: one TCP listener (and one for MQTT over WebSockets if `websocket`) and our
    authentication plugin instead of amqtt's defaults (anonymous login, $SYS topics, packet logging), and
    persistent sessions removed after `session_expiry` seconds offline (amqtt's own monitor; None: kept
    forever). Topic decisions need no plugin: `_AmqttBroker._topic_filtering` asks the same
    AccessControl; the intake is called by `_AmqttBroker._handle_message_delivery`."""
    plugins: dict[str, dict[str, Any]] = {"broker.plugins.AuthPlugin": {"access": access}}
    listeners = {"default": {"type": "tcp", "bind": f"{listen.host}:{listen.port}", "max_connections": 0}}
    if websocket is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{websocket.host}:{websocket.port}", "max_connections": 0}
    config: dict[str, Any] = {"listeners": listeners, "plugins": plugins}
    if session_expiry is not None:
        config["session_expiry_interval"] = math.ceil(session_expiry)
    return config


class _KeepAliveHandler(FastHandler, AckAfterSettleHandler, DeliveryHandler):
    """Fix 6 below: amqtt's broker-side handler reads with the keepalive as a timeout, then ignores the
    timeout, so a device that lost power or network without closing its TCP connection stayed
    "connected" until the kernel gave up (hours), and its will never fired."""

    _closing: asyncio.Future[None] | None = None

    def handle_read_timeout(self) -> None:
        # MQTT 3.1.1 section 3.1.2.10: nothing received for 1.5 x the keepalive is a network failure:
        # close as if the connection dropped, so the broker fires the will (checked, fix 5). At every
        # timeout, not once: before amqtt set up its disconnect waiter (a resumed session redelivering)
        # the call does nothing; after it, a second call is a no-op. The reference keeps the task alive.
        self._closing = asyncio.ensure_future(self.handle_connection_closed())


class _CoalescingWriter(StreamWriterAdapter):  # type: ignore[misc]
    """The packets amqtt writes in one event-loop iteration leave in one send().

    amqtt writes every packet on its own (each PUBACK, each delivery), and the transport makes a
    syscall per write: under one point per message that was 30% of `rtdp serve`'s CPU (py-spy). The
    reader parses every packet a read brought before the tasks that answer them run, so their PUBACKs
    meet here. Order is kept and `close()` sends what is held first. `drain()` (amqtt's back-pressure,
    awaited after every packet) waits on what was sent up to the previous iteration: a client that
    stops reading still stalls its writers, one iteration later."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self._held: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        # The socket's descriptor, for a plain TCP connection (never TLS: its bytes must go through the
        # transport): see `_send_now`.
        transport = writer.transport
        sock = transport.get_extra_info("socket")
        plain = transport.get_extra_info("sslcontext") is None and transport.get_extra_info("ssl_object") is None
        self._fd: int | None = sock.fileno() if sock is not None and plain else None

    def write(self, data: bytes) -> None:
        if self.is_closed:
            return
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)

    def _send(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            # A connection that went away in between: amqtt learns it from the reader, as before.
            if not self.is_closed and not self._writer.is_closing():
                self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        # With nothing waiting in the transport, written straight to the socket with os.write, which lets the
        # GIL go around the system call; the transport's write keeps it. A send to a local client often
        # hands the core to that client at once, and py-spy under 4 QoS 1 publishers found these sends
        # (the PUBACKs) at 17% of rtdp serve's GIL-holding samples: the writer thread could not run meanwhile.
        # What the socket does not take goes through the transport, in order (its buffer was empty).
        transport = self._writer.transport
        fd = self._fd
        if fd is None or transport.get_write_buffer_size():
            self._writer.write(data)
            return
        try:
            sent = os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._writer.write(data)  # the transport reports the broken connection its own way
            return
        if sent < len(data):
            self._writer.write(data[sent:])

    async def close(self) -> None:
        self._send()
        await super().close()


class _AmqttBroker(Broker):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """amqtt 0.12.1 (pinned) with these fixes (1, 2, 5, 9 and 12 for security, the rest for delivery), all overriding
    private methods, and two costs per message removed (`_topic_filtering`, `_CoalescingWriter`).

    1. amqtt applies a CONNECT's client id (deleting a clean session's subscriptions, or taking an
       existing session over) before it checks the password, so a wrong password with the bridge's
       client id silently cut the bridge off. Here the credentials are checked first.
    2. amqtt sends retained messages on subscribe without the RECEIVE check, so a `feeds/#`
       subscriber would get every feed's retained message; and on connect it sends retained
       messages for every filter anyone subscribed to. Here a session gets a retained message only
       for a filter it holds itself and only if it may receive that topic.
    3. amqtt PUBACKs a QoS 1 publish as soon as it is on the session's `delivered_message_queue`;
       the session's loop takes them off one by one (ACL check, broadcast). At a DISCONNECT that
       loop stopped and the session's queue was dropped: a publisher that sent a fast burst and
       exited lost about half of it. Here the loop first delivers everything the session holds.
    4. Messages queued for a persistent session while it was offline were delivered with the retain
       flag set, as if they were retained messages sent on subscribe. The bridge rightly refuses a
       retained message without its own x (it would be stored again at every subscribe), so a point
       queued while `rtdp bridge` restarted was acknowledged and then rejected. Here they are
       delivered as the ordinary messages they are (retain 0, MQTT 3.1.1 section 3.3.1.3).
    5. amqtt broadcasts (and retains) a client's will message without the PUBLISH check, so any user
       could have a will forge points on `rtdp/stored/<feed>` or write to someone else's feed. Here a
       CONNECT whose will topic it may not publish to is refused (NOT_AUTHORIZED), and the will is
       checked again when it fires.
    6. amqtt never drops a client that went silent (keepalive not enforced, `_KeepAliveHandler`); here a
       client that sends nothing for 1.5 x its keepalive is disconnected and its will fires.
    7. amqtt ends a session's message loop at a publish to a `$` topic and leaves the connection open,
       so every later publish of that client was acknowledged and silently dropped. Here such a publish
       is refused like any other topic the client may not publish to, and the session goes on.
    8. For a PUBLISH without topic amqtt logs "closing connection" but leaves it open, ignoring the
       client from then on. Here the connection is closed (MQTT 3.1.1 section 4.8).
    9. amqtt keeps sessions by the client id alone, so another user connecting with a device's id
       resumed its session (and got what was queued for it) or wiped it. Here a session's id is the
       client's id within the namespace of its rights (`broker.access.session_id`): the same user with
       the same token scope resumes it; anyone else gets a session of their own. Queued messages are
       checked again (RECEIVE) when they are finally sent.
    10. amqtt acknowledges a publish as soon as it has read it (`broker.acks`), so in `rtdp serve` a crash
       lost acknowledged points, and a full intake dropped them. Here a `feeds/...` publish is handed to
       the intake directly (no plugin event: those are fire-and-forget tasks that cannot wait) and
       acknowledged once its batch committed; while the intake is full the session waits, and a client
       with too many unsettled messages is no longer read from.
    11. amqtt sent a client's publish at each subscription's granted QoS (a QoS 0 publish at QoS 1); here
       at min(published, granted), MQTT 3.1.1 section 3.8.4.
    12. amqtt broadcasts a will without handing it to the intake, so a will on `feeds/...` was never
       stored; here it is stored like a publish.
    13. Retained messages on a feed's topics are kept only while the feed exists, tied to its id.
    14. amqtt keeps sessions and retained messages in memory only; here they are saved in the database
       (`broker.persistence`, its hooks marked "Fix 14") and restored before the listeners open.

    Every packet passes `broker.gate` first (protocol violations, versions, payload size); the handler
    acknowledges incoming messages once settled (`broker.acks`) and keeps unacknowledged deliveries for
    a persistent session's reconnect (`broker.delivery`).

    Connections are bounded by `broker.limits` (how many, from where, how long before CONNECT), and a
    CONNECT's password guesses by the throttle in `broker.access` (a delayed CONNACK 5).
    """

    def __init__(
        self,
        config: dict[str, Any],
        access: AccessControl,
        intake: Sink | None = None,
        max_unsettled: int = MAX_UNSETTLED,
        *,
        max_payload: int,
        limits: ConnectionLimits | None = None,
        connect_timeout: float = 10.0,
        session_queue: int = 1000,
        sessions_per_user: int = 100,
        offline_copies: int = 20_000,
        persistence: Persistence | None = None,
    ) -> None:
        super().__init__(config)
        self.persistence = persistence
        self.access = access
        self.intake = intake
        self.max_unsettled = max_unsettled
        self.max_payload = max_payload
        self.gate = GateCounter()
        self.retained_feeds: dict[str, int] = {}  # retained topic -> id of the feed it was set on
        self._connections: set[asyncio.Task[Any]] = set()
        self.limits = limits or ConnectionLimits(400, 100)
        self.connect_timeout = connect_timeout
        self.session_queue = session_queue
        self.sessions_per_user = sessions_per_user
        self.copies = CopyBudget(offline_copies)
        self.dropped_queued = 0  # messages dropped from full offline-session queues (broker.metrics)
        self.queued_offline = 0  # messages queued for offline sessions (a fan-out that queued one changed it)
        self._log = RateLimitedLog(logger)
        # broker.subscriptions: the filters each topic matches, remembered (amqtt tested every filter).
        self._subscriptions = Subscriptions(self._matches)
        # Broadcasts on amqtt's queue or being fanned out, per publishing client id (None: no client's, a
        # notice): only the same publisher's later messages must wait for them (MQTT 3.1.1 section 4.6).
        self._queued_from: Counter[str | None] = Counter()
        self.fast = FastPath(self)

    @property
    def subscriptions(self) -> Subscriptions:
        return self._subscriptions  # type: ignore[no-any-return]

    def broadcasting(self, client_id: str | None) -> bool:
        """A broadcast that a message of `client_id`'s (None: of nobody's, a notice) must not overtake is on
        amqtt's queue or being fanned out: its publisher's own, or a notice's; for a notice, any."""
        queued = self._queued_from
        if client_id is None:
            return bool(queued)
        return bool(queued[None] or queued[client_id])

    def handler_of(self, session: Session) -> Any:
        return self._get_handler(session)

    def charge_copies(self, publisher: Session | None, copies: int, handler: Any = None) -> None:
        """`copies` of `publisher`'s message queued for offline sessions: counted against its user's budget
        (broker.limits' `CopyBudget`); over it, that connection is not read for a while. Our own notices
        (no publisher) and the service account are not counted."""
        principal = self.access.principal(publisher.client_id) if publisher is not None else None
        if principal is None or principal.service:
            return
        pause = self.copies.charge(principal.user_id, copies, asyncio.get_running_loop().time())
        if pause:
            if handler is None:
                handler = self.handler_of(publisher)
            if isinstance(handler, AckAfterSettleHandler):
                handler.pause_reading(pause)

    def queue_offline(self, targets: list[Session], message: Any) -> None:
        """Queue `message` for offline persistent sessions, bounded: amqtt queued without bound (2,000
        sessions and 20,000 publishes made 16 million copies). At `session_queue` the oldest goes: a device
        back online wants the latest readings, and what it missed is stored anyway. One `message` object
        for all of them (broker.fastpath), saved once (fix 14); the id of its saved row is kept by each
        session's queue (`OfflineQueue.rows`), not on the shared message. A fan-out to 100 sessions costs
        one record and one log line, not 100."""
        persistence = self.persistence
        row = 0 if persistence is None else persistence.queued(targets, message)
        limit = self.session_queue
        full: list[Session] = []
        for target in targets:
            queue = target.retained_messages
            if type(queue) is not OfflineQueue:
                queue = offline_queue(target)
            if queue.push(message, limit, row):
                full.append(target)
        self.queued_offline += len(targets)
        if full:
            self.dropped_queued += len(full)
            self.dropped_log(len(full))
            if persistence is not None:
                persistence.trimmed(full)

    def dropped_log(self, sessions: int) -> None:
        self._log.warning(
            "session-queue", "%d offline session(s): queue full (%d), oldest message dropped",
            sessions, self.session_queue,
        )

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        # Every topic decision, asked of AccessControl directly: amqtt's way, a topic plugin run as a task
        # of its own and gathered, for each incoming message and each delivery, cost more than the
        # (cached) decision itself.
        if topic is None:
            return False
        return await self.access.permits(session.client_id, session.username, topic, TopicAction(action.value))

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        coalescing = _CoalescingWriter(writer)
        gate = PacketGate(StreamReaderAdapter(reader), coalescing, self.max_payload, self.gate)
        await self._connection(listener_name, gate, coalescing)

    async def ws_connected(self, websocket: ServerConnection, listener_name: str) -> None:
        # MQTT over WebSockets (`--mqtt-ws`): the same gate, authentication and ACL as over TCP.
        writer = WebSocketsWriter(websocket)
        gate = PacketGate(WebSocketsReader(websocket), writer, self.max_payload, self.gate)
        await self._connection(listener_name, gate, writer)

    async def _connection(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        # Each connection's task is known, so that `end_connections` can let them finish at a shutdown:
        # amqtt leaves them running, and a loop closed under them destroyed them mid-disconnect.
        task = asyncio.current_task()
        assert task is not None  # the server runs each connection in a task of its own
        self._connections.add(task)
        try:
            await self._client_connected(listener_name, reader, writer)
        finally:
            self._connections.discard(task)

    async def end_connections(self, grace: float) -> None:
        """After `shutdown()`: give the connections' tasks `grace` seconds to finish their disconnect (a
        publisher's held messages delivered, a will sent), then cancel what is left."""
        tasks = list(self._connections)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        # `broker.limits`: refused over the caps before a byte is read, and closed when amqtt is done
        # with it whatever happened (amqtt left a socket closed by its client before CONNECT in CLOSE-WAIT).
        peer = writer.get_peer_info()
        address = peer[0] if peer else ""
        if not self.limits.admit(address):
            await refuse(writer)
            return
        try:
            await super()._client_connected(listener_name, reader, writer)
        finally:
            self.limits.release(address)
            await shut(writer)

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> None:
        # A message for an offline persistent session, bounded (`queue_offline`): one object per QoS for
        # all the sessions it is queued for, saved once (amqtt made a copy each).
        shared: dict[int, Any] = broadcast.setdefault(_SHARED, {})
        message = shared.get(qos)
        if message is None:
            message = shared[qos] = RetainedApplicationMessage(None, broadcast["topic"], broadcast["data"], qos)
        self.queue_offline([target_session], message)
        await self.plugins_manager.fire_event(
            BrokerEvents.RETAINED_MESSAGE, client_id=target_session.client_id, retained_message=message
        )

    async def _start_listeners(self) -> None:
        # Fix 14: the saved sessions and retained messages are back before any client can connect.
        persistence = self.persistence
        if persistence is not None:
            persistence.restore(self, self.access, await persistence.load(), self.session_queue)
        await super()._start_listeners()

    def restore_subscription(self, session: Session, topic_filter: str, qos: int) -> None:
        """A saved subscription of a restored session (`broker.persistence`), checked when it delivers."""
        # Into broker.subscriptions' index: a new filter makes it forget the topics it matched.
        self.subscriptions.setdefault(topic_filter, []).append((session, qos))

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)
        if granted < 0x80 and self.persistence is not None:
            self.persistence.changed(session)  # fix 14
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted: int = super()._del_subscription(a_filter, session)
        if deleted and self.persistence is not None:
            self.persistence.changed(session)  # fix 14
        return deleted

    async def _delete_session(self, client_id: str) -> None:
        # A clean session takes over the id of a persistent one.
        await super()._delete_session(client_id)
        if self.persistence is not None:
            self.persistence.removed(client_id)  # fix 14

    async def _cleanup_session(self, client_id: str) -> None:
        # Also at amqtt's session expiry: the principal held for that session goes with it.
        await super()._cleanup_session(client_id)
        self.access.forget(client_id)
        if self.persistence is not None:
            self.persistence.removed(client_id)  # fix 14 (nothing once closed: a shutdown keeps them saved)

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        topic = getattr(message, "topic", None)
        if message is not None:
            # Fix 11: the QoS it was published with, for `_broadcast_message` (amqtt does not pass it on).
            # One session delivers one message at a time, so the attribute cannot be overwritten meanwhile.
            client_session.attributes[_PUBLISHED_QOS] = message.qos
        if self.intake is not None and topic and wanted(topic) and "#" not in topic and "+" not in topic:
            await self._hand_over(self.intake, client_session, message)
            return True
        persistence = self.persistence
        if (
            persistence is not None
            and (persistence.active or getattr(message, "retain", False))
            and topic
            and not topic.startswith("$")
            and "#" not in topic
            and "+" not in topic
        ):
            # Fix 14: not stored (no intake, or not a feed's topic), but what it changes in the saved state
            # is committed before its acknowledgement, as in `_hand_over`.
            await self._hand_over(None, client_session, message)
            return True
        try:
            if topic and topic.startswith("$"):
                # Fix 7: the ACL refuses (logs and counts) it; nothing may publish to a $ topic, not even the
                # service account, so the message is dropped either way.
                await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH)
                return True
            return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))
        finally:
            # Fix 10: nothing stores this one, its ack may go now (a refused publish is acknowledged too:
            # MQTT 3.1.1 has no other answer).
            settle(message)

    async def _hand_over(self, intake: Sink | None, client_session: Session, message: Any) -> None:
        # amqtt's delivery steps for a valid topic, with the intake between the PUBLISH check and the
        # broadcast. Fix 10: the intake settles the message once its batch committed, and makes this
        # session's loop wait while its queue is full (back-pressure; acknowledged and dropped before).
        client_id, topic = client_session.client_id, message.topic
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED, client_id=client_id, message=message)
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            settle(message)
            return
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST, client_id=client_id, message=message)
        # Fix 14: a publish that may change the saved state (queued for an offline persistent session,
        # retained) is acknowledged once that change committed too.
        persistence = self.persistence
        held = persistence.hold(message) if persistence and (persistence.active or message.retain) else None
        settled = held.stored if held is not None else message.settled
        if intake is None or (message.retain and not message.data):
            # An empty retained publish clears the topic's retained message (MQTT 3.1.1 section 3.3.1.3):
            # not a point, nothing to store. Without an intake, nothing is stored either.
            if settled is not None and not settled.done():
                settled.set_result(None)
        else:
            await self._store(intake, client_session, topic, message.data, message.retain, settled)
        await self._broadcast_message(client_session, topic, message.data, then=held.passed if held else None)
        retained = bool(message.publish_packet and message.publish_packet.retain_flag)
        if retained:
            await self.retain_message(client_session, topic, message.data, message.qos)
        if held is not None:
            held.passed(retained)

    async def _store(
        self,
        intake: Sink,
        client_session: Session,
        topic: str,
        data: Any,
        retain: Any,
        settled: asyncio.Future[None] | None = None,
    ) -> None:
        # A permitted `feeds/...` message into the intake, which resolves `settled` (if any: a will has no
        # ack) once stored; waits while the intake is full. With the publisher's id if it may create the feed.
        creator = self.access.creator(client_session.client_id, topic)
        await intake.put(topic, bytes(data), bool(retain), time.time(), creator, settled)

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: Any,
        force_qos: int | None = None,
        then: Callable[[bool], None] | None = None,
    ) -> None:
        # A broadcast's "qos" is the QoS it was published with (a will's own); none for our own notices.
        # `then` is called once it reached every subscriber (or its queue), with whether it was queued for
        # an offline session (saved: its acknowledgement waits for that commit).
        if force_qos is None and session is not None:
            force_qos = session.attributes.get(_PUBLISHED_QOS)
        # Fanned out at once when every decision is cached and nothing is queued before it (broker.fastpath).
        publisher = session.client_id if session is not None else None
        if topic and data is not None and self.fast.enabled:
            copies = self.fast.broadcast(publisher, topic, bytes(data), force_qos)
            if copies is not None:
                if copies:
                    self.charge_copies(session, copies)
                if then is not None:
                    then(bool(copies))
                return
        broadcast: dict[str, Any] = {"session": session, "topic": topic, "data": data}
        if force_qos is not None:
            broadcast["qos"] = force_qos
        if then is not None:
            broadcast[_THEN] = then
        self._queued_from[publisher] += 1
        await self._broadcast_queue.put(broadcast)

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        # amqtt's own fan-out, but with fix 11: each subscriber gets min(published QoS, granted QoS) (MQTT
        # 3.1.1 section 3.8.4); amqtt sent every client publish at the subscription's QoS, a QoS 0 publish
        # at QoS 1 included. Our own notices (no published QoS) go at the subscription's QoS.
        broadcast = await self._broadcast_queue.get()
        started = time.monotonic()
        while True:
            queued = self.queued_offline  # what changes it is this one's (or, rarely, held longer by another's)
            try:
                await self._fan_out(broadcast, running_tasks)
            finally:
                session = broadcast.get("session")
                publisher = session.client_id if session is not None else None
                self._queued_from[publisher] -= 1
                if not self._queued_from[publisher]:
                    del self._queued_from[publisher]
                then = broadcast.get(_THEN)  # fix 14: a held acknowledgement may go on
                if then is not None:
                    then(self.queued_offline != queued)
            # What queued meanwhile, in order, without a task and an `asyncio.wait` each; the loop is given
            # back after SLICE seconds.
            if self._broadcast_queue.empty() or time.monotonic() - started > SLICE:
                break
            broadcast = self._broadcast_queue.get_nowait()

    async def _fan_out(self, broadcast: dict[str, Any], running_tasks: deque[asyncio.Task[Any]]) -> None:
        topic, published, data = broadcast["topic"], broadcast.get("qos"), broadcast["data"]
        # Every decision cached (as it is but once per decision_ttl): broker.fastpath's fan-out, without awaits,
        # one message object shared by the offline sessions' queues.
        targets = self.fast.targets(topic, published) if self.fast.enabled and data is not None else None
        if targets is not None:
            copies = self.fast.deliver(targets, topic, bytes(data))
            if copies:
                self.charge_copies(broadcast.get("session"), copies)
            return
        # Some decision must be read (a cache expired, credentials due for a check): the cached ones first,
        # each other one once (2,000 offline sessions of one user: one read, not 2,000 awaited checks).
        memo = Memo(time.monotonic())  # AccessControl.permits_now: one decision per principal
        copies = 0
        decided: list[tuple[Session, int, bool | None]] = []
        for topic_filter in self._subscriptions.matching(topic):
            for target, granted in list(self._subscriptions.get(topic_filter, ())):
                qos = granted if published is None else min(published, granted)
                permitted = self.access.permits_now(target.client_id, topic, TopicAction.RECEIVE, memo)
                if permitted:
                    self.access.messages_out += 1  # as `permits` counts
                decided.append((target, qos, permitted))
        memo.now = time.monotonic()  # the reads below wait for the database: expiries count from now
        for target, qos, permitted in decided:
            if permitted is None:
                # Read by an earlier target's check (the same user's decision), or asked now.
                permitted = self.access.permits_now(target.client_id, topic, TopicAction.RECEIVE, memo)
                if permitted is None:
                    permitted = await self._topic_filtering(target, topic=topic, action=Action.RECEIVE)
                elif permitted:
                    self.access.messages_out += 1
            if not permitted:
                continue
            if target.transitions.state != "connected":
                # Queued for an offline persistent session, QoS 1 and 2 only (3.1.2.4).
                if not target.clean_session and qos in (QOS_1, QOS_2):
                    await self._retain_broadcast_message(broadcast, qos, target)
                    copies += 1
                continue
            handler = self._get_handler(target)
            if handler is not None:
                sending = handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                running_tasks.append(asyncio.ensure_future(sending))
        if copies:
            self.charge_copies(broadcast.get("session"), copies)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # amqtt's own method (its name: "retained" means "queued while offline"), with retain=False, and
        # without waiting for the acknowledgements (broker.delivery).
        handler = self._get_handler(session)
        if not isinstance(handler, DeliveryHandler):
            return
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            # Checked when queued, against the rights of then: a share removed meanwhile counts now.
            if await self._topic_filtering(session, topic=queued.topic, action=Action.RECEIVE):
                handler.send_later(queued.topic, queued.data, queued.qos, retain=False)
        if self.persistence is not None:
            self.persistence.changed(session)  # fix 14: connected; what it was sent is saved until acknowledged

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt's own method, with the authentication step moved before any use of the client id.
        # amqtt authenticates again later; AccessControl has cached the answer by then.
        try:
            connecting = _KeepAliveHandler.init_from_connect(reader, writer, self.plugins_manager)
            async with asyncio.timeout(self.connect_timeout):  # broker.limits: no CONNECT, no connection
                handler, client_session = await connecting
        except TimeoutError:
            raise AMQTTError(f"no CONNECT within {self.connect_timeout:g} s") from None
        except (AMQTTError, NoDataError) as exc:
            # No CONNECT came (the client left, or the gate refused it): amqtt left the socket open.
            await writer.close()
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        handler.max_unsettled = self.max_unsettled
        handler.fast = self.fast

        try:
            held = await self.access.login(client_session.username, client_session.password, remote_address)
        except TooManyAttempts:
            # Not authorized, after a pause: the guesser learns nothing and gets no faster answer.
            await asyncio.sleep(THROTTLED_DELAY)
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("CONNECT refused: too many password attempts") from None
        if held is None:
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("CONNECT refused: bad credentials")
        # Fix 9: the session lives under the client's id within the namespace of its rights.
        client_session.client_id = session_id(client_session.client_id or gen_client_id(), held.principal)
        self.access.hold(client_session.client_id, held)
        if client_session.will_flag and not await self._will_permitted(client_session):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"CONNECT refused: may not publish its will on {client_session.will_topic!r}")

        if not client_session.clean_session and self._over_session_cap(client_session.client_id):
            # One user's persistent sessions are bounded: each one queues (and saves) a copy of every
            # publish it subscribed to while it is away (2,000 of them made each publish 2,000 rows).
            self.access.forget(client_session.client_id)
            await ConnackPacket.build(0, SERVER_UNAVAILABLE).to_stream(writer)
            await writer.close()
            self._log.warning(
                "session-cap", "CONNECT refused: %s already has %d persistent sessions (RTDP_SESSIONS_PER_USER);"
                " connect with clean session 1, or let one expire", session_owner(client_session.client_id),
                self.sessions_per_user,
            )
            raise MQTTError("CONNECT refused: too many persistent sessions")
        if client_session.clean_session:
            if client_session.client_id:
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            existing.will_flag = client_session.will_flag
            existing.will_message = client_session.will_message
            existing.will_topic = client_session.will_topic
            existing.will_qos = client_session.will_qos
            existing.keep_alive = client_session.keep_alive
            existing.username = client_session.username
            existing.password = client_session.password
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0

        # The read timeout (fix 6): 1.5 x the client's keepalive, as MQTT 3.1.1 says; 0 means none.
        client_session.keep_alive = math.ceil(1.5 * client_session.keep_alive)
        return handler, client_session

    def _over_session_cap(self, client_id: str) -> bool:
        """Whether a persistent session `client_id` would be one too many for its owner (a new one: taking
        up an existing one is always allowed; the service account is not counted)."""
        if client_id in self._sessions:
            return False
        owner = session_owner(client_id)
        if owner is None:
            return False
        held = 0
        for other, (session, _) in self._sessions.items():
            if not session.clean_session and session_owner(other) == owner:
                held += 1
                if held >= self.sessions_per_user:
                    return True
        return False

    async def _will_permitted(self, session: Session) -> bool:
        # Fix 5: amqtt broadcasts a will without any publish check.
        return bool(await self._topic_filtering(session, topic=session.will_topic, action=Action.PUBLISH))

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        # Fix 5, again when the will fires: the rights it was checked against at CONNECT may be gone.
        if client_session.will_flag and not await self._will_permitted(client_session):
            client_session.will_flag = False
        will_fires = client_session.will_flag and not isinstance(disconnect_waiter.result(), DisconnectPacket)
        topic, data = client_session.will_topic, client_session.will_message
        if will_fires and self.intake is not None and topic and wanted(topic) and data:
            # Fix 12: amqtt broadcasts a will without handing it to the intake, so a will on `feeds/...`
            # was never stored. Stored here, while the client's principal is still held (for the feed's
            # creator); a will has nobody to acknowledge.
            await self._store(self.intake, client_session, topic, data, client_session.will_retain)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)
        if self.persistence is not None:
            self.persistence.changed(client_session)  # fix 14: offline now, with what it did not acknowledge

    async def retain_message(
        self, source_session: Session | None, topic_name: str | None, data: Any, qos: int | None = None
    ) -> None:
        # Fix 13: a retained message on a feed's topic is kept only while that feed exists, and is tied
        # to it by id: one set before the feed existed, or on a feed since deleted, reached whoever
        # created a feed of that name later. (The first retained publish that creates a feed is
        # therefore not kept: the feed does not exist yet when it arrives.)
        feed = feed_of_filter(topic_name) if topic_name else None
        if data and feed is not None and topic_name is not None:
            feed_id = await self.access.feed_id(feed)
            if feed_id is None:
                return
            self.retained_feeds[topic_name] = feed_id
        elif topic_name is not None:
            self.retained_feeds.pop(topic_name, None)
        persistence = self.persistence
        if persistence is not None and topic_name is not None:  # fix 14
            if data:
                persistence.retained(topic_name, self.retained_feeds.get(topic_name), data, qos)
            elif topic_name in self._retained_messages:
                persistence.cleared(topic_name)
        await super().retain_message(source_session, topic_name, data, qos)

    async def _retained_feed_current(self, topic: str) -> bool:
        """A retained message's feed is still the one it was set on (checked before each delivery)."""
        feed = feed_of_filter(topic)
        if feed is None:
            return True
        if self.retained_feeds.get(topic) == await self.access.feed_id(feed, fresh=True):
            return True
        self._retained_messages.pop(topic, None)  # the feed was deleted (and maybe made again by someone)
        self.retained_feeds.pop(topic, None)
        if self.persistence is not None:
            self.persistence.cleared(topic)  # fix 14
        return False

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        # amqtt's own loop, unchanged except at a disconnect (fix 3): deliver what the session holds
        # first, while its principal is still known (the disconnect event makes AuthPlugin forget it).
        disconnect_waiter = asyncio.ensure_future(handler.wait_disconnect())
        subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        connected = True
        while connected:
            try:
                waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if disconnect_waiter in done:
                    await self._deliver_held_messages(client_session, handler, wait_deliver)
                    await self._handle_disconnect(client_session, handler, disconnect_waiter)
                    connected = False
                if subscribe_waiter in done:
                    await self._handle_subscription(client_session, handler, subscribe_waiter)
                    handler.done_one()  # broker.fastpath: this client's later publishes may go fast again
                    subscribe_waiter = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe_waiter in done:
                    await self._handle_unsubscription(client_session, handler, unsubscribe_waiter)
                    handler.done_one()
                    unsubscribe_waiter = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if connected and wait_deliver in done:
                    if not await self._handle_message_delivery(client_session, handler, wait_deliver):
                        # Fix 8: a PUBLISH without topic is a protocol error; amqtt only left this loop,
                        # and the still open connection was acknowledged and ignored from then on.
                        # Close it, and go on to handle that disconnect as any other.
                        await handler.handle_connection_closed()
                    if wait_deliver.result() is not None:
                        handler.done_one()
                    wait_deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
            except asyncio.CancelledError:
                break
        pending_waiters = [disconnect_waiter, subscribe_waiter, unsubscribe_waiter, wait_deliver]
        for waiter in pending_waiters:
            waiter.cancel()
        await asyncio.gather(*pending_waiters, return_exceptions=True)

    async def _deliver_held_messages(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> None:
        held = []
        if not wait_deliver.done():
            # Cancelled while waiting, mqtt_deliver_next_message returns None and leaves the queue
            # alone; it must not take a message after we drained (that one would be lost).
            wait_deliver.cancel()
            await asyncio.gather(wait_deliver, return_exceptions=True)
        if not wait_deliver.cancelled() and wait_deliver.exception() is None and wait_deliver.result() is not None:
            held.append(wait_deliver.result())
        queue = client_session.delivered_message_queue
        while not queue.empty():
            held.append(queue.get_nowait())
        loop = asyncio.get_running_loop()
        for message in held:
            # _handle_message_delivery takes the finished future of mqtt_deliver_next_message.
            delivered: asyncio.Future[Any] = loop.create_future()
            delivered.set_result(message)
            # False means an invalid topic (amqtt would close the connection): skip that one.
            await self._handle_message_delivery(client_session, handler, delivered)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        handler = self._get_handler(session)
        if not isinstance(handler, DeliveryHandler) or not any(held is session for held, _ in holders):
            return
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            if not await self._retained_feed_current(topic):
                continue
            handler.send_later(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)


class EmbeddedBroker:
    """amqtt on `listen` (default `settings.mqtt`), guarded by rtdp's users and permissions.

    `await start()` inside a running event loop (amqtt needs one), then `address` is the bound
    address (port 0 picks a free port). `access` holds the counters. Use as `async with`.

    `intake.put(...)`, if an intake is given, receives every permitted `feeds/...` publish on the broker's
    loop and settles it once stored (broker.intake); `publish()` sends messages into the broker from any
    thread. Feeds are auto-created (`settings.auto_create`) only with an intake: the intake tells the
    writer who published, a subscribing bridge cannot know (see bridge.routes). `logins` (the password
    throttle) and `hash_pool` may be shared with the viewer (`rtdp serve`); by default its own.
    """

    def __init__(
        self,
        settings: Settings,
        service: ServiceAccount,
        *,
        listen: HostPort | None = None,
        intake: Sink | None = None,
        logins: Throttle | None = None,
        hash_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.listen = listen or settings.mqtt
        self.intake = intake
        self.access = AccessControl(
            service,
            auto_create=settings.auto_create and intake is not None,
            credential_ttl=settings.credential_ttl,
            decision_ttl=settings.decision_ttl,
            throttle=logins or Throttle(settings.login_attempts, settings.login_window),
            hash_threads=settings.hash_threads,
            hash_pool=hash_pool,
        )
        self.limits = ConnectionLimits(settings.mqtt_max_connections, settings.mqtt_connections_per_ip)
        self.access.on_revoked = self._disconnect
        self._broker: _AmqttBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._ws_port: int | None = None
        self._sending: set[asyncio.Future[None]] = set()

    @property
    def address(self) -> HostPort:
        if self._port is None:
            raise BrokerError("the embedded broker is not running")
        return HostPort(self.listen.host, self._port)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        config = broker_config(self.listen, self.access, self.settings.mqtt_ws, self.settings.session_expiry)
        self._broker = _AmqttBroker(
            config,
            self.access,
            self.intake,
            self.settings.mqtt_inflight,
            max_payload=self.settings.max_payload,
            limits=self.limits,
            connect_timeout=self.settings.mqtt_connect_timeout,
            session_queue=self.settings.session_queue,
            sessions_per_user=self.settings.sessions_per_user,
            offline_copies=self.settings.offline_copies,
            persistence=Persistence(self.settings.session_expiry),
        )
        try:
            await self._broker.start()
        except AmqttBrokerError as exc:
            self.access.close()
            self._broker = None
            raise self._start_error(exc) from None
        self._port = self._bound_port("default", self.listen)
        if self.settings.mqtt_ws is not None:
            self._ws_port = self._bound_port("ws", self.settings.mqtt_ws)
        self.access.rights.start()

    def _bound_port(self, listener: str, asked: HostPort) -> int:
        assert self._broker is not None
        sockets = getattr(self._broker._servers[listener].instance, "sockets", None) or ()
        return int(next(iter(sockets)).getsockname()[1]) if sockets else asked.port

    @property
    def ws_address(self) -> HostPort | None:
        """Where MQTT over WebSockets is served (`settings.mqtt_ws`, its port bound), or None."""
        asked = self.settings.mqtt_ws
        if asked is None or self._ws_port is None:
            return None
        return HostPort(asked.host, self._ws_port)

    async def ingest(
        self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample], timeout: float
    ) -> None:
        """A point from inside the process (HTTP ingestion in `rtdp serve`, whose caller checked the write
        permission with rtdp.catalog, as this broker's ACL would): stored through the intake as a permitted
        publish on `topic` would be, delivered to this broker's subscribers, and returned once committed,
        the moment a client's PUBACK would leave. `samples` are the payload as the caller cast it for
        `casts` (rtdp.handoff). Raises the writer's rejection, TimeoutError when not stored within
        `timeout` seconds, or Unavailable when the broker is not running. On the broker's loop."""
        broker, intake = self._broker, self.intake
        if broker is None or intake is None:
            raise Unavailable("the embedded broker is not running; retry later", retry_after=2)
        loop = asyncio.get_running_loop()
        # One timer on the receipt rather than asyncio.timeout around the whole: that one's task
        # bookkeeping cost as much as the hand-off. Only a full intake (put waits) needs the general one.
        started = loop.time()
        receipt: asyncio.Future[RtdpError | None] = loop.create_future()
        handoff = Handoff(casts, samples, receipt)
        if intake.has_room():
            await intake.put(topic, payload, False, time.time(), None, None, handoff)  # returns at once
        else:
            async with asyncio.timeout(timeout):
                await intake.put(topic, payload, False, time.time(), None, None, handoff)
        timer = loop.call_at(started + timeout, _expire, receipt)
        try:
            # As for a client's QoS 1 publish: subscribers get it once the intake has it (not after the
            # commit), at most at QoS 1. Not queued for the broadcast loop at all when no subscription
            # matches: for HTTP points nobody follows over MQTT, that loop's wake-up cost more than the
            # rest of the hand-off.
            if _subscribed(broker, topic):
                await broker.internal_message_broadcast(topic, payload, 1)
            rejection = await receipt
        finally:
            timer.cancel()
        if rejection is not None:
            raise rejection

    def offer(
        self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample]
    ) -> asyncio.Future[RtdpError | None] | None:
        """`ingest` without waiting, in the common case (HTTP ingestion's path without a task,
        viewer.ingest): when the intake has room and no subscription matches `topic` (nothing to broadcast),
        the points are queued and their receipt returned, resolved once committed with None or the
        writer's rejection; no timer (the caller arms its own). None, and nothing done, otherwise: then
        call `ingest`. On the broker's loop."""
        broker, loop = self._broker, self._loop
        # A sink without `offer` (tests' own) can only wait: `ingest`.
        offer = getattr(self.intake, "offer", None)
        if broker is None or loop is None or offer is None or _subscribed(broker, topic):
            return None
        # The loop `start` ran on, this one: asyncio.get_running_loop() makes a getpid() system call each
        # time on Python 3.11 (about 5% of an HTTP point's time on the loop, py-spy --native).
        receipt: asyncio.Future[RtdpError | None] = loop.create_future()
        if not offer(topic, payload, time.time(), None, None, Handoff(casts, samples, receipt)):
            return None
        return receipt

    def publish(self, topic: str, payload: bytes) -> None:
        """Broadcast a message from inside the process (as the service account would publish it, RECEIVE
        checks included), from any thread; never blocks. Dropped if the broker is not running."""
        loop = self._loop
        if self._broker is None or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._broadcast, topic, payload)
        except RuntimeError:
            pass  # the loop closed between the check and the call: the broker is gone

    def _broadcast(self, topic: str, payload: bytes) -> None:
        broker = self._broker
        if broker is None or not _subscribed(broker, topic):
            return
        # QoS None: each subscriber gets its subscription's QoS, as for a client's QoS 1 publish.
        sending = asyncio.ensure_future(broker.internal_message_broadcast(topic, payload, None))
        self._sending.add(sending)  # the loop keeps only weak references to tasks
        sending.add_done_callback(self._sending.discard)

    def _disconnect(self, client_id: str) -> None:
        """Close the connection of a client whose credentials were revoked (called on the broker's loop).

        As if its connection dropped, but without its will message: it no longer has the right to
        publish one. Its session's held messages are then refused by the ACL, and a persistent session
        stays offline until a login with valid credentials."""
        broker = self._broker
        entry = broker.sessions.get(client_id) if broker is not None else None
        if entry is None:
            return
        session, handler = entry
        if not session.transitions.is_connected():
            return
        session.will_flag = False
        closing = asyncio.ensure_future(handler.handle_connection_closed())
        self._sending.add(closing)
        closing.add_done_callback(self._sending.discard)

    def _start_error(self, exc: AmqttBrokerError) -> BrokerError:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            ws = self.settings.mqtt_ws
            if ws is not None:  # amqtt does not say which listener failed
                return PortInUse(
                    f"MQTT address {self.listen} or WebSocket address {ws} is already in use: choose"
                    " another with --mqtt HOST:PORT or --mqtt-ws HOST:PORT",
                    address=f"{self.listen} {ws}",
                )
            return PortInUse(
                f"MQTT address {self.listen} is already in use: choose another with --mqtt HOST:PORT",
                address=str(self.listen),
            )
        if isinstance(cause, OSError):
            return BrokerError(f"cannot listen on MQTT address {self.listen} ({cause.strerror}): check --mqtt")
        return BrokerError(f"the embedded MQTT broker failed to start: {exc}")

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        self._port = self._ws_port = None
        await self.access.rights.stop()
        if broker is not None:
            try:
                if broker.persistence is not None:
                    # Saved as they are now: amqtt's shutdown ends every session in memory.
                    await broker.persistence.close(list(broker.sessions))
                await broker.shutdown()
                await broker.end_connections(grace=SHUTDOWN_GRACE)
            finally:
                self.access.close()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class _HideStartupTraceback(logging.Filter):
    # amqtt logs a full traceback when a listener cannot bind; we raise a one-line error instead.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Broker startup failed")


class _SummariseConnectionFailures(logging.Filter):
    """amqtt logs a warning for every connection that ends before or without a session (no CONNECT in
    time, closed early, refused): a flood of such connections was a flood of log lines. Here at most one
    such line per `INTERVAL` seconds, which says how many were not logged."""

    INTERVAL = 10.0
    PREFIXES = ("Failed to initialize client session", "Error while handling client session")

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[float, int]] = {}  # prefix: (when last logged, skipped since)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        prefix = next((p for p in self.PREFIXES if message.startswith(p)), None)
        if prefix is None:
            return True
        now = time.monotonic()
        last, skipped = self._last.get(prefix, (-math.inf, 0))
        if now - last < self.INTERVAL:
            self._last[prefix] = (last, skipped + 1)
            return False
        self._last[prefix] = (now, 0)
        if skipped:
            record.msg, record.args = f"{message} ({skipped} similar messages not logged)", None
        return True


def _subscribed(broker: _AmqttBroker, topic: str) -> bool:
    """Whether any subscription (of a connected or an offline persistent session) matches `topic`: if
    none does, a broadcast would only wake amqtt's broadcast loop for nothing (broker.subscriptions)."""
    subscriptions = broker.subscriptions
    return any(subscriptions.get(f) for f in subscriptions.matching(topic))


def _expire(receipt: asyncio.Future[RtdpError | None]) -> None:
    # The writer's later result finds it done and leaves it (bridge.intake).
    if not receipt.done():
        receipt.set_exception(TimeoutError())


def quiet_amqtt_logging() -> None:
    """Keep amqtt's traceback for a port in use out of the console (we raise PortInUse instead), and its
    warning per failed connection down to a summary every few seconds."""
    amqtt_logger = logging.getLogger("amqtt.broker")
    for kind in (_HideStartupTraceback, _SummariseConnectionFailures):
        if not any(isinstance(f, kind) for f in amqtt_logger.filters):
            amqtt_logger.addFilter(kind())


async def serve(settings: Settings, service: ServiceAccount, stop: asyncio.Event | None = None) -> None:
    """Run the embedded broker until `stop` is set, or until SIGINT or SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with EmbeddedBroker(settings, service) as broker:
            metrics_server = None
            if settings.metrics is not None:
                from rtdp.prometheus import serve_metrics

                metrics_server = serve_metrics(settings.metrics, BrokerCollector(broker))[0]
            print(f"MQTT broker listening on mqtt://{broker.address}", flush=True)
            if broker.ws_address is not None:
                print(f"MQTT over WebSockets on ws://{broker.ws_address}", flush=True)
            try:
                await stop.wait()
            finally:
                if metrics_server is not None:
                    metrics_server.shutdown()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(settings: Settings) -> None:
    """`rtdp broker`: the embedded broker alone (on uvloop unless --loop asyncio), until Ctrl-C or SIGTERM.

    Raises PortInUse (a BrokerError) with a one-line message when the MQTT address is taken.
    """
    from rtdp import eventloop
    from rtdp.database import open_database
    from rtdp.logs import configure_logging
    from rtdp.openfiles import allow_open_files

    configure_logging(settings.log_level)
    allow_open_files(settings.mqtt_max_connections)
    quiet_amqtt_logging()
    db = open_database(settings.database_url)
    try:
        service = ServiceAccount.load_or_create(settings.data_dir)
        eventloop.run(serve(settings, service), settings.loop)
    finally:
        db.close()
