"""The fast path: a client's ordinary PUBLISH handled in one step on the connection's reader, without amqtt.

amqtt 0.12.1 spent, per incoming message, a task for the timed read, byte-by-byte parsing through many
awaits, a task for `handle_publish`, a message object on the session's queue, a task for the session
loop's next take plus an `asyncio.wait` over four waiters, an awaited ACL check per message and per
subscriber, a trip through the broadcast queue with another task and `asyncio.wait`, and a match of
the topic against every subscription. With one point per message that, not SQLite, was the limit of
`rtdp serve` (py-spy: the broker alone moved about 5,000 messages/s). Here, when nothing can tell the
difference, a PUBLISH goes straight from the packet gate's bytes (broker.gate) to the intake and the
subscribers, synchronously, on the connection's reader task:

- parsed from the whole packet the gate read (fixed header, topic, packet id, payload: one slice);
- the publisher's ACL decision and each subscriber's, taken from AccessControl's caches
  (`permits_now`; once per principal per message, so 2,000 sessions of one user cost one lookup);
- the filters matching the topic from the subscription index (broker.subscriptions), and the sessions
  that get it kept per topic until a subscription, a held principal or a cached decision changes, or
  the first of those decisions expires (`targets`);
- a `feeds/...` message offered to the intake without waiting (`Intake.offer`: one hand-over to the
  writer thread per loop iteration), its PUBACK queued behind the client's earlier ones and sent once
  the commit settled it (broker.acks, unchanged);
- delivered to connected subscribers (broker.delivery's flows) and, for offline persistent sessions,
  one message object per QoS shared by all their queues (`OfflineQueue`), bounded per session and
  recorded once for all of them (`queue_offline`); such a message's PUBACK also waits for the commit of
  its saved row (`Persistence.barrier`, asked for this message only: a flood queued for offline
  sessions holds no other client's PUBACK), and its copies count against the publisher's user's
  budget (broker.limits' `CopyBudget`: over it, this connection is not read for a while).

Anything else takes amqtt's way, unchanged, and so does a message whenever the fast path could change
an outcome or an order: QoS 2, the retain flag, DUP on QoS 0, wildcards, `$` or undecodable topics;
an ACL decision not cached, or refused (the slow path logs and counts it); a full intake (the slow path
waits: back-pressure); a QoS 2 flow of this client's still open; and a broadcast of this client's (or a
notice) still on amqtt's queue (a subscriber gets each publisher's messages in order; another client's
queued broadcasts do not hold this one back).
While this client's session loop still has earlier packets of its own (a SUBSCRIBE, a PUBLISH that went
amqtt's way), the reader waits for it to finish them (up to `DRAIN_WAIT`) before it takes the next
PUBLISH: a SUBSCRIBE takes effect before the PUBLISH sent after it, and a burst does not stay on amqtt's
path to its end. A plugin listening to the events skipped here (message received or broadcast, packet
received, queued for an offline session) turns the fast path off.

One connection's reader gives the loop back every `SLICE` seconds, so a client sending fast (or a
message fanned out to thousands of sessions) cannot hold the loop that HTTP and every other client share.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.errors import MQTTError, NoDataError
from amqtt.events import BrokerEvents, MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from broker.access import Memo, TopicAction
from broker.intake import wanted
from broker.subscriptions import MAX_TOPICS

if TYPE_CHECKING:
    from broker.server import _AmqttBroker

# Seconds one connection's reader runs before it lets the loop serve others.
SLICE = 0.002
# Seconds a reader waits for its session loop to finish this client's earlier packets.
DRAIN_WAIT = 1.0

# The events whose plugins the fast path would skip: any listener turns it off.
_SKIPPED_EVENTS = (
    MQTTEvents.PACKET_RECEIVED, BrokerEvents.MESSAGE_RECEIVED, BrokerEvents.MESSAGE_BROADCAST,
    BrokerEvents.RETAINED_MESSAGE,
)

_HANDLERS = {
    CONNACK: "handle_connack", SUBACK: "handle_suback", UNSUBACK: "handle_unsuback", PUBACK: "handle_puback",
    PUBREC: "handle_pubrec", PUBREL: "handle_pubrel", PUBCOMP: "handle_pubcomp", PINGREQ: "handle_pingreq",
    PINGRESP: "handle_pingresp", DISCONNECT: "handle_disconnect",
}


class OfflineQueue(asyncio.Queue[Any]):
    """A persistent session's queue while it is offline (amqtt's `Session.retained_messages`), bounded.
    `rows` runs beside the messages: the id of each one's saved row (broker.persistence; 0: not saved),
    per session, since one message object may sit in many sessions' queues."""

    rows: collections.deque[int]

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)  # type: ignore[misc]  # asyncio.Queue's own hook
        self.rows = collections.deque()

    def _put(self, item: Any) -> None:
        super()._put(item)  # type: ignore[misc]
        self.rows.append(0)

    def _get(self) -> Any:
        self.rows.popleft()
        return super()._get()  # type: ignore[misc]

    def push(self, message: Any, limit: int, row: int = 0) -> bool:
        """Append `message` (saved as `row`), dropping the oldest at `limit`; True if one was dropped. Nobody
        awaits `get()` on this queue (it is emptied with `get_nowait` at the reconnect), so nobody is woken."""
        queue: collections.deque[Any] = self._queue  # type: ignore[attr-defined]  # asyncio.Queue's own deque
        dropped = len(queue) >= limit
        if dropped:
            queue.popleft()
            self.rows.popleft()
        queue.append(message)
        self.rows.append(row)
        return dropped


def offline_queue(session: Any) -> OfflineQueue:
    """`session`'s queue for while it is offline, made an `OfflineQueue` (amqtt gives every session a plain
    asyncio.Queue) with what it held."""
    queue = session.retained_messages
    if not isinstance(queue, OfflineQueue):
        queue = OfflineQueue()
        while not session.retained_messages.empty():
            queue.put_nowait(session.retained_messages.get_nowait())
        session.retained_messages = queue
    return queue


class FastPath:
    """The broker's side of the fast path: decisions, intake and fan-out, all without waiting."""

    def __init__(self, broker: _AmqttBroker) -> None:
        self.broker = broker
        self.access = broker.access
        self.taken = 0  # messages handled here (broker.metrics could show the share)
        # (topic, published QoS): its targets and until when they hold (`targets`), all of them built while
        # the subscriptions and access had the generations `_kept_at`; forgotten together at the first
        # `targets` call after those change, so a removed session is not kept past the next message.
        self._kept: dict[tuple[str, int | None], tuple[list[tuple[Any, int]], float]] = {}
        self._kept_at = (-1, -1)
        callbacks = getattr(broker.plugins_manager, "_event_plugin_callbacks", {})
        self.enabled = not any(event in callbacks for event in _SKIPPED_EVENTS)

    def publish(
        self,
        handler: FastHandler,
        session: Any,
        arrived: float,
        topic: str,
        payload: bytes,
        qos: int,
        packet_id: int | None,
    ) -> bool:
        """Take a client's PUBLISH (read at `arrived`, epoch seconds) now, or False (nothing done) for amqtt's
        way."""
        broker, access = self.broker, self.access
        client_id = session.client_id
        if broker.broadcasting(client_id):
            return False
        if access.permits_now(client_id, topic, TopicAction.PUBLISH) is not True:
            return False
        targets = self.targets(topic, qos)
        if targets is None:
            return False
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()
        intake = broker.intake
        if intake is not None and wanted(topic):
            offer = getattr(intake, "offer", None)  # a sink that can only wait (tests' own): amqtt's way
            if offer is None or not offer(topic, payload, arrived, access.creator(client_id, topic), settled):
                return False
        else:
            settled.set_result(None)
        access.messages_in += 1
        self.taken += 1
        # Queued for an offline persistent session: its PUBACK waits for that row's commit too (this
        # message's own barrier, as broker.persistence `HeldAck`); other messages are not held by it.
        persistence = broker.persistence
        copies = self.deliver(targets, topic, payload)
        if copies:
            broker.charge_copies(session, copies, handler)
        if copies and persistence is not None:
            acked = loop.create_future()
            _settle_when_all(acked, [settled, persistence.barrier()])
            handler.accept(acked, qos, packet_id)
        else:
            handler.accept(settled, qos, packet_id)
        return True

    def broadcast(self, publisher: str | None, topic: str, data: bytes, qos: int | None) -> int | None:
        """amqtt's broadcast of `publisher`'s message whose publish was handled (or of our own notice, `qos`
        and `publisher` None: each subscriber at its granted QoS), done now: the copies it queued for offline
        sessions; None if it must go through amqtt's queue."""
        if self.broker.broadcasting(publisher):
            return None
        targets = self.targets(topic, qos)
        if targets is None:
            return None
        return self.deliver(targets, topic, data)

    def targets(self, topic: str, published: int | None) -> list[tuple[Any, int]] | None:
        """The sessions that get `topic` and at which QoS (MQTT 3.1.1 section 3.8.4: min(published, granted)),
        or None if a RECEIVE decision is not cached. Kept per topic while no subscription and no held
        principal or cached decision changed, and until the first of the decisions it was built from
        expires: a flood to 100 offline sessions works them out once, not once per message. The list is
        shared: callers only read it."""
        subscriptions, access = self.broker.subscriptions, self.access
        key = (topic, published)
        now = time.monotonic()
        generations = (subscriptions.generation, access.generation)
        if generations != self._kept_at:
            self._kept.clear()
            self._kept_at = generations
        else:
            kept = self._kept.get(key)
            if kept is not None and now < kept[1]:
                return kept[0]
        permits_now, receive = access.permits_now, TopicAction.RECEIVE
        memo = Memo(now)
        found: list[tuple[Any, int]] = []
        for topic_filter in subscriptions.matching(topic):
            for target, granted in subscriptions.get(topic_filter, ()):
                permitted = permits_now(target.client_id, topic, receive, memo)
                if permitted is None:
                    return None
                if permitted:
                    found.append((target, granted if published is None else min(published, granted)))
        if len(self._kept) >= MAX_TOPICS:
            self._kept.clear()
        self._kept[key] = (found, memo.until)
        return found

    def deliver(self, targets: list[tuple[Any, int]], topic: str, data: bytes) -> int:
        """Send to the connected `targets`, queue for the offline persistent ones (QoS 1 and 2 only, 3.1.2.4:
        one message object per QoS for all of them, `queue_offline`); how many it queued."""
        broker = self.broker
        self.access.messages_out += len(targets)
        offline: dict[int, list[Any]] | None = None
        for target, qos in targets:
            if target.transitions.state != "connected":
                if qos and not target.clean_session:
                    if offline is None:
                        offline = {qos: [target]}
                    elif qos in offline:
                        offline[qos].append(target)
                    else:
                        offline[qos] = [target]
                continue
            handler = broker.handler_of(target)
            if handler is not None:
                handler.send_later(topic, data, qos, retain=False)
        if offline is None:
            return 0
        copies = 0
        for qos, sessions in offline.items():
            broker.queue_offline(sessions, RetainedApplicationMessage(None, topic, data, qos))
            copies += len(sessions)
        return copies


def _settle_when_all(acked: asyncio.Future[None], parts: list[asyncio.Future[None] | None]) -> None:
    """Resolve `acked` once every one of `parts` (None: nothing to wait for) is done."""
    waiting = [part for part in parts if part is not None and not part.done()]
    if not waiting:
        acked.set_result(None)
        return
    left = len(waiting)

    def one_done(_: object) -> None:
        nonlocal left
        left -= 1
        if not left and not acked.done():
            acked.set_result(None)

    for part in waiting:
        part.add_done_callback(one_done)


class FastHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """amqtt's broker-side handler with its reader loop replaced: whole packets from the gate, a PUBLISH
    through `FastPath` when it can, every other packet parsed and dispatched as amqtt does. Mixed in before
    broker.acks' handler (`accept`, `send_later` come from there and broker.delivery)."""

    fast: FastPath | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken = 0  # items the session loop took and has not finished with (broker.server)
        self._slow_publishes = 0  # amqtt handle_publish tasks not finished
        self._drained: asyncio.Future[None] | None = None  # the reader waits for the session loop

    async def mqtt_deliver_next_message(self) -> Any:
        message = await super().mqtt_deliver_next_message()
        if message is not None:
            self.taken += 1
        return message

    async def get_next_pending_subscription(self) -> Any:
        subscription = await super().get_next_pending_subscription()
        self.taken += 1
        return subscription

    async def get_next_pending_unsubscription(self) -> Any:
        unsubscription = await super().get_next_pending_unsubscription()
        self.taken += 1
        return unsubscription

    def _backlog(self) -> bool:
        """Something of this client's is waiting for or inside its session loop."""
        return bool(
            self.taken
            or not self.session.delivered_message_queue.empty()
            or not self._pending_subscriptions.empty()
            or not self._pending_unsubscriptions.empty()
        )

    def done_one(self) -> None:
        """The session loop finished with an item it took (broker.server)."""
        self.taken -= 1
        drained = self._drained
        if drained is not None and not drained.done() and not self._backlog():
            drained.set_result(None)

    async def _until_drained(self) -> None:
        # The session loop has this client's earlier packets: a PUBLISH that went amqtt's way, a SUBSCRIBE.
        # Wait for it (this client only) rather than queue behind it: a burst would otherwise stay on
        # amqtt's path to its end. Bounded, in case the loop is held up; then amqtt's way.
        self._drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(DRAIN_WAIT):
                await self._drained
        except TimeoutError:
            pass
        finally:
            self._drained = None

    async def _reader_loop(self) -> None:
        take = getattr(self.reader, "packet", None)
        take_now = getattr(self.reader, "packet_now", None)
        fast = self.fast
        if take is None or take_now is None or fast is None or not fast.enabled:
            await super()._reader_loop()
            return
        if self.session is None or not self._reader_ready:
            await super()._reader_loop()
            return
        running: collections.deque[asyncio.Task[Any]] = collections.deque()
        keepalive: float | None = self.session.keep_alive
        if keepalive is not None and keepalive <= 0:
            keepalive = None
        loop = asyncio.get_running_loop()
        turn = loop.time()
        # When the bytes of the packets in hand were read: one clock read per network read, not per packet
        # (and the writer observes messages that arrived together together: bridge.writer).
        arrived = time.time()
        while True:
            try:
                self._reader_ready.set()
                while running and running[0].done():
                    running.popleft()
                packet = take_now()  # already read: no await, no timer
                if packet is not None:
                    pass
                elif keepalive is None:
                    packet = await take()
                    arrived = time.time()
                else:
                    async with asyncio.timeout(keepalive):
                        packet = await take()
                    arrived = time.time()
                if packet is None:
                    break
                ordinary = self._ordinary(packet) if packet[0] >> 4 == PUBLISH else None
                if ordinary is not None and not self._slow_publishes and self._backlog():
                    await self._until_drained()
                if not (
                    ordinary is not None
                    and not self._slow_publishes
                    and not self._backlog()
                    and fast.publish(self, self.session, arrived, *ordinary)
                ):
                    task = await self._dispatch(packet)
                    if task is not None:
                        running.append(task)
                if loop.time() - turn > SLICE:
                    await asyncio.sleep(0)
                    turn = loop.time()
            except MQTTError:
                self.logger.debug("Message discarded")
            except asyncio.CancelledError:
                break
            except TimeoutError:
                self.handle_read_timeout()
            except NoDataError:
                pass
            except Exception as exc:  # noqa: BLE001 -- amqtt's own rule: a handler bug ends this connection only
                self.logger.warning(f"{type(self).__name__} Unhandled exception in reader coro: {exc!r}")
                break
        while running:
            running.popleft().cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    def _ordinary(self, packet: bytes) -> tuple[str, bytes, int, int | None] | None:
        """A PUBLISH's topic, payload, QoS and packet id if the fast path may take it, else None."""
        first = packet[0]
        qos = (first >> 1) & 3
        if qos > 1 or first & 1 or (qos == 0 and first & 8):
            return None  # QoS 2, retain, DUP on QoS 0: amqtt's way
        pos = 1
        while packet[pos] & 0x80:
            pos += 1
        pos += 1
        end = pos + 2 + int.from_bytes(packet[pos : pos + 2], "big")
        try:
            topic = packet[pos + 2 : end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not topic or topic[0] == "$" or "+" in topic or "#" in topic or "\x00" in topic:
            return None
        packet_id = None
        if qos:
            packet_id = int.from_bytes(packet[end : end + 2], "big")
            end += 2
            if not packet_id:
                return None
        if end > len(packet):
            return None
        return topic, packet[end:], qos, packet_id

    async def _dispatch(self, packet: bytes) -> asyncio.Task[Any] | None:
        # amqtt's parse and dispatch of one packet, from the bytes the gate read.
        self.reader.unread(packet)
        fixed_header = await MQTTFixedHeader.from_stream(self.reader)
        if not fixed_header:
            raise NoDataError
        kind = fixed_header.packet_type
        parsed = await packet_class(fixed_header).from_stream(self.reader, fixed_header=fixed_header)
        await self.plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=parsed, session=self.session)
        if kind == CONNECT:
            await self.handle_connect(parsed)
            return None
        if kind == SUBSCRIBE:
            await self.handle_subscribe(parsed)  # only queues it for the session loop
            return None
        if kind == UNSUBSCRIBE:
            await self.handle_unsubscribe(parsed)
            return None
        if kind == PUBLISH:
            self._slow_publishes += 1
            task = asyncio.create_task(self.handle_publish(parsed))
            task.add_done_callback(self._slow_publish_done)
            return task
        name = _HANDLERS.get(kind)
        if name is None:
            return None
        return asyncio.create_task(getattr(self, name)(parsed))

    def _slow_publish_done(self, _: asyncio.Task[Any]) -> None:
        self._slow_publishes -= 1
