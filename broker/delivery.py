"""Delivery to subscribers: QoS 1 and 2 messages stay with a persistent session until acknowledged.

amqtt 0.12.1 dropped an outgoing QoS 1/2 message from the session as soon as its flow ended, acknowledged
or not: at a disconnect (the waiters are cancelled), after 5 s without PUBACK, and when the broadcast
reached a session whose client had just sent DISCONNECT (the packet went to a closed writer). So a
persistent subscriber that reconnected got none of them again, where MQTT 3.1.1 (section 4.4) asks the
server to resend unacknowledged PUBLISH (DUP=1) and PUBREL packets at the reconnect, and a QoS 1
message published just after a subscriber's DISCONNECT was lost about half the time (Mosquitto: never).

Here a message stays in the session's `inflight_out` until its flow completes; amqtt's own retry at the
next connection (`ProtocolHandler._retry_deliveries`) resends it, with DUP=1 if it had been sent. A
message that meets a closing connection is not sent at all but kept the same way. A clean session ends
with its connection, and with it what was in flight. No timeout while connected: 3.1.1 resends only at
a reconnect, and a client that stops answering is dropped by the keepalive.

Redelivery and queued messages are sent without holding up the session's loop (amqtt waited for every
acknowledgement before reading the client's own packets): the sends are started in order, and one
connection's writes keep their order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OUTGOING

from rtdp.logs import RateLimitedLog

logger = logging.getLogger(__name__)

# Unacknowledged deliveries one session may hold: MQTT's packet ids run out at 65,535 (amqtt then raised
# and logged a traceback per message). A client that acknowledges nothing loses what comes beyond.
MAX_INFLIGHT = 65_000

_log = RateLimitedLog(logger)


class DeliveryHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """amqtt's broker-side protocol handler with the outgoing QoS 1 and 2 flows kept until acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ended = False  # DISCONNECT received, connection lost or handler stopped
        self._sending: set[asyncio.Future[Any]] = set()

    async def handle_disconnect(self, disconnect: Any) -> None:
        self._ended = True
        await super().handle_disconnect(disconnect)

    async def stop(self) -> None:
        self._ended = True
        await super().stop()

    async def mqtt_publish(self, topic: str, data: Any, qos: int | None, retain: bool, ack_timeout: Any = None) -> Any:
        session = self.session
        if qos and len(session.inflight_out) + len(session.inflight_in) >= MAX_INFLIGHT:
            unacknowledged = "MQTT client %r holds %d unacknowledged messages: one dropped"
            _log.warning("inflight", unacknowledged, session.client_id, MAX_INFLIGHT)
            return None
        return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)

    def send_later(self, topic: str, data: bytes | bytearray, qos: int | None, *, retain: bool) -> None:
        """Start sending a message to the client; its flow runs on, the caller does not wait for it."""
        self._track(asyncio.ensure_future(self.mqtt_publish(topic, data, qos, retain)))

    def _track(self, sending: asyncio.Future[Any]) -> None:
        self._sending.add(sending)  # the loop keeps only weak references to tasks
        sending.add_done_callback(self._sending.discard)

    async def _retry_deliveries(self) -> None:
        # amqtt's retry at (re)connect, without waiting for the acknowledgements (see the module docstring).
        for message in [*self.session.inflight_in.values(), *self.session.inflight_out.values()]:
            self._track(asyncio.ensure_future(self._handle_message_flow(message)))

    def _open(self) -> bool:
        reader = self._reader_task
        return not self._ended and self.writer is not None and (reader is None or not reader.done())

    async def _handle_qos1_message_flow(self, message: Any) -> None:
        if message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(message)
            return
        await self._deliver(message)

    async def _handle_qos2_message_flow(self, message: Any) -> None:
        if message.direction != OUTGOING:
            await super()._handle_qos2_message_flow(message)
            return
        await self._deliver(message)

    async def _deliver(self, message: Any) -> None:
        session = self.session
        packet_id = message.packet_id
        session.inflight_out[packet_id] = message
        if not self._open():
            self._keep(message)
            return
        try:
            if message.qos == QOS_1:
                message.puback_packet = await self._exchange(self._publish_packet(message), self._puback_waiters)
            elif message.qos == QOS_2:
                if message.pubrec_packet is None:
                    message.pubrec_packet = await self._exchange(self._publish_packet(message), self._pubrec_waiters)
                message.pubrel_packet = PubrelPacket.build(packet_id)
                message.pubcomp_packet = await self._exchange(message.pubrel_packet, self._pubcomp_waiters)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the task itself was cancelled (shutdown), not just its waiter
            self._keep(message)  # the connection ended first: the waiters were cancelled
            return
        session.inflight_out.pop(packet_id, None)

    def _publish_packet(self, message: Any) -> Any:
        packet = message.build_publish_packet(dup=message.publish_packet is not None)
        message.publish_packet = packet  # from now on a resend carries DUP=1
        return packet

    async def _exchange(self, packet: Any, waiters: dict[int, asyncio.Future[Any]]) -> Any:
        """Send `packet` and wait for the answer with its packet id."""
        packet_id = packet.variable_header.packet_id
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters[packet_id] = waiter
        try:
            await self._send_packet(packet)
            if not self._open():  # the connection ended while we wrote: the waiter would never be answered
                waiter.cancel()
            return await waiter
        finally:
            waiters.pop(packet_id, None)

    def _keep(self, message: Any) -> None:
        if self.session.clean_session:
            self.session.inflight_out.pop(message.packet_id, None)  # the session ends with its connection
