"""The one module that touches paho's private names (listed in PATCHED; pyproject pins paho's minor version).

paho (2.x) reads every packet with at least three `recv` calls (the command byte, the remaining length, then
the rest), each after a `select`, turns each PUBLISH into an MQTTMessage matched against the callback
filters, and makes a `send` per queued packet. For a stream of small QoS 1 publishes that was most of a
client's time (the bridge's limit at one point per message). So:

- `PublishReader` replaces paho's packet reader: one `recv` of up to 64 KiB, every complete PUBLISH (QoS 0
  or 1) in it parsed here and handed over as one list, any other packet (CONNACK, SUBACK, PUBACK, PINGRESP,
  a QoS 2 PUBLISH) given to paho's own handling, in order.
- `send_pubacks` queues many PUBACKs as one packet; `buffer_sends` collects what paho writes so that the
  owner sends it once per event-loop iteration.
- `close_socket` drops the connection now, through paho, so its state and callbacks stay consistent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

READ_SIZE = 64 * 1024

# Every private paho name used below, as "Class.name": tests/rtdp/mqtt/test_internals.py fails when the
# installed paho lacks one (pyproject pins paho to the minor version this was written for).
PATCHED = (
    "Client._sock",
    "Client._sock_recv",
    "Client._sock_send",
    "Client._sock_close",
    "Client._msgtime_mutex",
    "Client._last_bytes_received",
    "Client._in_packet",
    "Client._packet_read",
    "Client._packet_handle",
    "Client._packet_queue",
    "MQTTMessage._topic",
)


def missing_names() -> list[str]:
    """The names in PATCHED that the installed paho does not have (on fresh instances: some are set in
    __init__)."""
    instances = {
        "Client": mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311),
        "MQTTMessage": mqtt.MQTTMessage(),
    }
    missing = []
    for qualified in PATCHED:
        owner, name = qualified.split(".")
        if not hasattr(instances[owner], name):
            missing.append(qualified)
    return missing


class Publish(NamedTuple):
    """A PUBLISH as it came off the wire (MQTT 3.1.1): the topic undecoded, `mid` 0 at QoS 0."""

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    retain: bool


_PUBLISH = 0x30


class PublishReader:
    """Stands in for paho's `Client._packet_read` (see `read_publishes`)."""

    __slots__ = ("_client", "_deliver", "_buffer", "_sock", "_needed")

    def __init__(self, client: mqtt.Client, deliver: Callable[[list[Publish]], None]) -> None:
        self._client = client
        self._deliver = deliver
        self._buffer = b""
        self._sock: object = None
        self._needed = 0  # bytes the incomplete packet at the head of the buffer still lacks

    def read(self) -> MQTTErrorCode:
        """Read once and handle every complete packet; paho's loop_read calls it when the socket is readable.
        MQTT_ERR_AGAIN tells loop_read that nothing more can be read now."""
        client = self._client
        sock = client._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._sock:  # a new connection: what was left belonged to the old one
            self._sock, self._buffer, self._needed = sock, b"", 0
        try:
            data = client._sock_recv(max(READ_SIZE, self._needed))
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self._needed = 0
        with client._msgtime_mutex:
            client._last_bytes_received = mqtt.time_func()
        buffer = self._buffer + data if self._buffer else data
        publishes: list[Publish] = []
        pos, end = 0, len(buffer)
        while True:
            # Fixed header: the type and flags byte, then the remaining length (1 to 4 bytes, 7 bits each).
            if end - pos < 2:
                break
            header = buffer[pos]
            index = pos + 1
            length = shift = 0
            complete = False
            while index < end:
                byte = buffer[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if not complete:
                break
            body_end = index + length
            if body_end > end:
                self._needed = body_end - end
                break
            if header & 0xF0 == _PUBLISH and header & 0x06 < 0x04:
                qos = (header >> 1) & 0x03
                if length < 2:
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL
                topic_end = index + 2 + (buffer[index] << 8 | buffer[index + 1])
                if qos:
                    payload_start = topic_end + 2
                    mid = buffer[topic_end] << 8 | buffer[topic_end + 1] if payload_start <= body_end else 0
                else:
                    payload_start, mid = topic_end, 0
                if payload_start > body_end:
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL
                publishes.append(
                    Publish(buffer[index + 2 : topic_end], buffer[payload_start:body_end], mid, qos, bool(header & 1))
                )
            else:
                # Hand what came before to its owner first: paho's handling may change what follows
                # (a CONNACK starts a new session for the PUBLISH packets after it).
                if publishes:
                    self._deliver(publishes)
                    publishes = []
                rc = self._handle(header, bytearray(buffer[index:body_end]), length)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client._sock is not sock:
                    self._buffer, self._needed = b"", 0
                    return rc if rc != MQTTErrorCode.MQTT_ERR_SUCCESS else MQTTErrorCode.MQTT_ERR_AGAIN
            pos = body_end
        self._buffer = buffer[pos:]
        if publishes:
            self._deliver(publishes)
        return MQTTErrorCode.MQTT_ERR_AGAIN

    def _handle(self, header: int, body: bytearray, length: int) -> MQTTErrorCode:
        """One packet through paho's own handling, set up as its reader would leave it (paho 2.2)."""
        client = self._client
        client._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": body,
            "to_process": 0,
            "pos": 0,
        }
        try:
            return client._packet_handle()
        except MalformedPacket:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            client._in_packet = {
                "command": 0,
                "have_remaining": 0,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": 0,
                "packet": bytearray(),
                "to_process": 0,
                "pos": 0,
            }


def read_publishes(client: mqtt.Client, deliver: Callable[[list[Publish]], None]) -> None:
    """Make `client` (MQTT 3.1.1) parse incoming packets with a `PublishReader`: every QoS 0 and 1 PUBLISH
    goes to `deliver`, as a list per read, instead of to on_message (which still gets QoS 2). Nothing is
    acknowledged here: the owner acks (`send_pubacks`). Call before connecting."""
    if client.protocol not in (mqtt.MQTTv31, mqtt.MQTTv311):  # MQTT 5 publishes carry properties
        raise ValueError("PublishReader parses MQTT 3.1.1 only")
    client._packet_read = PublishReader(client, deliver).read  # type: ignore[method-assign]


_PUBACK = struct.Struct("!BBH")


def send_pubacks(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages as one queued packet: paho's `ack()` queues a packet, and costs a send(),
    for each."""
    if not mids:
        return
    pack = _PUBACK.pack
    client._packet_queue(mqtt.PUBACK, b"".join([pack(mqtt.PUBACK, 2, mid) for mid in mids]), 0, 0)


def buffer_sends(client: mqtt.Client, send: Callable[[bytes | bytearray], int]) -> None:
    """Everything paho writes goes to `send` (which must take it all) instead of the socket."""
    client._sock_send = send  # type: ignore[method-assign,assignment]


def close_socket(client: mqtt.Client) -> None:
    """Drop the connection now (paho has no public way): its socket-close callbacks run as usual."""
    client._sock_close()


def raw_topic(message: mqtt.MQTTMessage) -> bytes:
    """A message's topic as received: `message.topic` fails on bytes that are not UTF-8."""
    topic: bytes = message._topic
    return topic
