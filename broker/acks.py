"""Acknowledgement after commit: the broker-side protocol handler that PUBACKs (or PUBRECs) a client's
publish only once the message is settled, and stops reading from a client with too many unsettled.

amqtt 0.12.1 sends a QoS 1 PUBACK as soon as the message is on the session's queue, before the session's
loop even looked at it; a QoS 2 PUBREC before that. Here every incoming PUBLISH becomes a `Received`
with a `settled` future. Whoever takes the message resolves it (`settle`): the bridge's intake once
the transaction holding its points (or its rejection) committed, the broker at once for a message
that is not stored (refused by the ACL, not a `feeds/...` topic). Acks leave in the order the PUBLISH
packets came in (MQTT 3.1.1 section 4.6), as their messages settle, so a client's later messages are
read and handled while earlier acks wait: its in-flight window fills the writer's next commit.

Back-pressure: a client with `max_unsettled` messages not yet settled (QoS 0 included: they are held
in memory just the same) is no longer read from; the kernel's buffers fill and the client's TCP send
blocks, MQTT's own flow control. Reading resumes as its messages settle. Likewise for a client that does
not read what the broker sends (its PUBACKs, its deliveries): with `MAX_BACKLOG` bytes waiting in its
send buffer, reading stops until that drained, so acks for a client that never reads cannot pile up.
A client held either way for 1.5 x its keepalive is disconnected like any silent one (its
unacknowledged messages it sends again).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import INCOMING, ApplicationMessage, IncomingApplicationMessage, Session

# Unsettled messages one client may have before the broker stops reading from it (settings.mqtt_inflight).
MAX_UNSETTLED = 100
# Bytes waiting to be sent to a client before the broker stops reading from it: asyncio's own high-water
# mark, above which a transport's drain() waits.
MAX_BACKLOG = 64 * 1024
# Longest pause (`pause_reading`): the paused read counts in the keep-alive timeout, at least 1.5 s.
MAX_PAUSE = 1.0

# The acknowledgements as bytes (fixed header, remaining length 2, packet id follows): amqtt builds a
# packet object per ack, and they are the broker's most frequent packets.
PUBACK = b"\x40\x02"
PUBREC = b"\x50\x02"
PUBCOMP = b"\x70\x02"


class Received(IncomingApplicationMessage):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """An incoming PUBLISH and its settlement: `settled` is done once nothing can lose it any more."""

    __slots__ = ("settled",)

    def __init__(
        self, packet_id: int | None, topic: str, qos: int, data: bytes, retain: bool, settled: asyncio.Future[None]
    ) -> None:
        super().__init__(packet_id, topic, qos, data, retain)
        self.settled = settled


def settle(message: ApplicationMessage | None) -> None:
    """Mark `message` settled (its ack may go) unless it already is; any other message: nothing to do."""
    settled = getattr(message, "settled", None)
    if settled is not None and not settled.done():
        settled.set_result(None)


class _GatedReader(ReaderAdapter):  # type: ignore[misc]
    """The connection's reader, waiting at each read while `gate` is closed, the client's send buffer
    holds more than `MAX_BACKLOG` bytes, or until `resume_at` (loop time; 0.0: not paused)."""

    resume_at = 0.0

    def __init__(self, reader: ReaderAdapter, gate: asyncio.Event, writer: WriterAdapter) -> None:
        self._reader = reader
        self._gate = gate
        self._writer = writer
        stream = getattr(writer, "_writer", None)  # an asyncio StreamWriter (TCP), else no send buffer to see
        self._transport: asyncio.WriteTransport | None = getattr(stream, "transport", None)
        self.draining = False

    async def packet(self) -> bytes | None:
        """The next whole packet from the packet gate (broker.gate), after the same waits as `read`."""
        await self._wait()
        packet: bytes | None = await self._reader.packet()
        return packet

    def unread(self, packet: bytes) -> None:
        self._reader.unread(packet)

    def packet_now(self) -> bytes | None:
        """The gate's next packet if it is already read and nothing holds reading back, else None."""
        if not self._gate.is_set():
            return None
        if self.resume_at:
            if asyncio.get_running_loop().time() < self.resume_at:
                return None
            self.resume_at = 0.0
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() >= MAX_BACKLOG:
            return None
        packet: bytes | None = self._reader.packet_now()
        return packet

    async def read(self, n: int = -1) -> bytes:
        await self._wait()
        data: bytes = await self._reader.read(n)
        return data

    async def _wait(self) -> None:
        if not self._gate.is_set():
            await self._gate.wait()
        while self.resume_at:
            pause = self.resume_at - asyncio.get_running_loop().time()
            if pause <= 0:
                self.resume_at = 0.0
                break
            self.draining = True  # counted as held (broker.metrics), as for a full send buffer
            try:
                await asyncio.sleep(pause)
            finally:
                self.draining = False
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() >= MAX_BACKLOG:
            self.draining = True
            try:
                await self._writer.drain()
            finally:
                self.draining = False

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class AckAfterSettleHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's broker-side handler with incoming QoS 0/1/2 flows that acknowledge on settlement."""

    max_unsettled = MAX_UNSETTLED

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unsettled = 0
        self._gate = asyncio.Event()
        self._gate.set()
        # (settled, ack bytes, packet id) in the order the PUBLISH packets arrived.
        self._acks: deque[tuple[asyncio.Future[None], bytes, int]] = deque()
        self._reader_gate: _GatedReader | None = None

    @property
    def unsettled(self) -> int:
        """Messages read from this client and not settled yet (broker.metrics)."""
        return self._unsettled

    @property
    def reading_paused(self) -> bool:
        """Whether the broker stopped reading from this client (broker.metrics)."""
        draining = self._reader_gate is not None and self._reader_gate.draining
        return draining or not self._gate.is_set()

    def pause_reading(self, seconds: float) -> None:
        """Read nothing more from this client for `seconds`, at most MAX_PAUSE (broker.limits' `CopyBudget`).
        A pause under way is not lengthened: the client's next packet (a PINGREQ perhaps) is read after it,
        and the next publish over the budget pauses it again."""
        gate = self._reader_gate
        if gate is not None and not gate.resume_at:
            gate.resume_at = self._loop.time() + min(seconds, MAX_PAUSE)

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        self._reader_gate = _GatedReader(reader, self._gate, writer)
        super().attach(session, self._reader_gate, writer)

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        # amqtt's own method, building a Received instead of an IncomingApplicationMessage.
        topic, data = publish_packet.topic_name, publish_packet.data
        if topic is None or data is None or self.session is None:
            return
        qos = publish_packet.qos
        if qos not in (QOS_0, QOS_1, QOS_2):
            raise AMQTTError(f"Unexpected QOS value '{qos}' for a PUBLISH")
        packet_id: int | None = publish_packet.variable_header.packet_id if publish_packet.variable_header else None
        if qos != QOS_0 and packet_id is None:
            raise AMQTTError("a QoS 1 or 2 PUBLISH without a packet id")
        message = Received(packet_id, topic, qos, data, publish_packet.retain_flag, self._loop.create_future())
        message.publish_packet = publish_packet
        self._hold(message.settled)
        queue = self.session.delivered_message_queue
        if qos == QOS_0:
            if publish_packet.dup_flag:
                # amqtt's rule, kept: MQTT 3.1.1 section 3.3.1.2 forbids DUP on QoS 0.
                self.logger.warning("[MQTT-3.3.1-2] DUP flag must set to 0 for QOS 0 message. Message ignored")
                settle(message)
                return
            queue.put_nowait(message)
        elif qos == QOS_1:
            assert packet_id is not None  # checked above
            self._queue_ack(message.settled, PUBACK, packet_id)
            queue.put_nowait(message)
        else:
            await self._received_qos2(message)

    def accept(self, settled: asyncio.Future[None], qos: int, packet_id: int | None) -> None:
        """A QoS 0 or 1 publish taken without amqtt (broker.fastpath): counted as unsettled, acknowledged in
        arrival order once `settled`."""
        self._hold(settled)
        if qos == QOS_1:
            assert packet_id is not None
            self._queue_ack(settled, PUBACK, packet_id)

    def _hold(self, settled: asyncio.Future[None]) -> None:
        self._unsettled += 1
        if self._unsettled >= self.max_unsettled:
            self._gate.clear()
        settled.add_done_callback(self._on_settled)

    async def _handle_qos2_message_flow(self, app_message: ApplicationMessage) -> None:
        # amqtt re-runs the flow of a persistent session's QoS 2 messages still waiting for PUBREL when the
        # client comes back (`_retry_deliveries`): ours, so that they are not delivered a second time.
        if getattr(app_message, "direction", None) == INCOMING and isinstance(app_message, Received):
            await self._received_qos2(app_message)
            return
        await super()._handle_qos2_message_flow(app_message)

    async def _received_qos2(self, message: Received) -> None:
        # MQTT 3.1.1 section 4.3.3, method B: deliver once, PUBREC when settled, and until PUBREL any resend
        # of that packet id is acknowledged again without a second delivery.
        assert self.session is not None and message.packet_id is not None
        packet_id = message.packet_id
        held = self.session.inflight_in.get(packet_id)
        if not isinstance(held, Received):
            held = message
            self.session.inflight_in[packet_id] = message
            self.session.delivered_message_queue.put_nowait(message)
        elif held is not message:
            settle(message)
        previous = self._pubrel_waiters.get(packet_id)
        if previous is not None and not previous.done():
            previous.cancel()
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._pubrel_waiters[packet_id] = waiter
        self._queue_ack(held.settled, PUBREC, packet_id)
        try:
            await waiter
        except asyncio.CancelledError:
            if self._pubrel_waiters.get(packet_id) is not waiter:
                return  # a resend of the same packet id took over
            raise
        finally:
            if self._pubrel_waiters.get(packet_id) is waiter:
                del self._pubrel_waiters[packet_id]
        self.session.inflight_in.pop(packet_id, None)
        self._write(PUBCOMP, packet_id)

    async def handle_pubrel(self, pubrel: Any) -> None:
        # MQTT 3.1.1 section 4.3.3: a PUBREL is always answered with PUBCOMP, also for a packet id not
        # waited for (its flow ended, or its state was lost); amqtt logged it and answered nothing, and
        # the client waited for ever.
        packet_id = pubrel.packet_id
        waiter = self._pubrel_waiters.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(pubrel)
            return
        if self.session is not None:
            self.session.inflight_in.pop(packet_id, None)
        self._write(PUBCOMP, packet_id)

    def _queue_ack(self, settled: asyncio.Future[None], ack: bytes, packet_id: int) -> None:
        self._acks.append((settled, ack, packet_id))
        if settled.done():
            self._release_acks()

    def _on_settled(self, settled: asyncio.Future[None]) -> None:
        self._unsettled -= 1
        if self._unsettled < self.max_unsettled:
            self._gate.set()
        self._release_acks()

    def _release_acks(self) -> None:
        acks = self._acks
        while acks and acks[0][0].done():
            _, ack, packet_id = acks.popleft()
            self._write(ack, packet_id)

    def _write(self, ack: bytes, packet_id: int) -> None:
        # A closed connection's acks go nowhere: the client sends those messages again after reconnecting.
        writer = self.writer
        if writer is not None:
            writer.write(ack + packet_id.to_bytes(2, "big"))
