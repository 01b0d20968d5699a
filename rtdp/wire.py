"""Fewer system calls and less Python per packet for paho (bridge and viewer).

paho (2.x) reads every packet with at least three `recv` calls (the command byte, the remaining length,
then the rest), each after a `select`, and turns each PUBLISH into an MQTTMessage matched against the
callback filters. For a stream of small QoS 1 publishes that is most of its network thread's time, and
the network thread is what limits the bridge at one point per message. Two ways around it:

- `BufferedSocket` (`buffer_reads`) takes whatever the kernel holds in one `recv` of up to 64 KiB and
  hands it out as paho asks; its `pending()` tells paho (as an SSL socket does) that bytes are already
  waiting, so paho reads them without another `select`. paho still parses every packet.
- `PublishReader` (`read_publishes`) replaces paho's packet reader: one `recv` of up to 64 KiB, every
  complete PUBLISH (QoS 0 or 1) in it parsed here and handed over as one list, any other packet
  (CONNACK, SUBACK, PUBACK, PINGRESP, a QoS 2 PUBLISH) given to paho's own handling, in order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

READ_SIZE = 64 * 1024


class _Socket(Protocol):
    def recv(self, size: int, /) -> bytes: ...
    def send(self, data: bytes | bytearray, /) -> int: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    def setblocking(self, flag: bool, /) -> None: ...


class BufferedSocket:
    """A socket whose reads come from one buffer refilled `READ_SIZE` bytes at a time. Writes, errors
    (BlockingIOError when nothing is waiting, SSL's want-read) and end of stream (b"") pass through."""

    __slots__ = ("_sock", "_buffer", "_pos")

    def __init__(self, sock: _Socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        pos = self._pos
        buffer = self._buffer
        if pos >= len(buffer):
            buffer = self._sock.recv(max(size, READ_SIZE))
            if len(buffer) <= size:
                # Empty (end of stream) or no more than was asked: nothing to keep.
                self._buffer, self._pos = b"", 0
                return buffer
            self._buffer = buffer
            pos = 0
        # An offset, not a shorter copy of the rest: slicing off the front would copy the whole buffer
        # on every read. A short read (less left than asked) is fine: paho asks again for the rest.
        end = min(pos + size, len(buffer))
        self._pos = end
        return buffer[pos:end]

    def pending(self) -> int:
        """Bytes readable without a system call (paho skips its select while this is non-zero)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) - self._pos + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        # Anything else paho or a callback may use (settimeout, getpeername, ...) is the socket's own.
        if name == "_sock":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._sock, name)


def buffer_reads(client: mqtt.Client) -> None:
    """Make `client` read through a BufferedSocket on every (re)connection. Call before connecting.

    paho has no public hook for the socket it creates, so this wraps its `_create_socket` (paho 2.x),
    the same place paho itself wraps a socket for websockets; on a paho without it, nothing changes.
    """
    create = getattr(client, "_create_socket", None)
    if create is None:
        return
    factory = cast(Callable[[], _Socket], create)

    def create_buffered() -> BufferedSocket:
        return BufferedSocket(factory())

    client._create_socket = create_buffered  # type: ignore[method-assign]


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
        """Read once and handle every complete packet; paho calls it when the socket is readable (or its
        SSL layer has bytes pending). MQTT_ERR_AGAIN tells paho's loop_read to go back to select."""
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
        """One packet through paho's own handling, set up as its reader would leave it (paho 2.x)."""
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
    goes to `deliver`, as a list per read, on paho's network thread, instead of to on_message (which
    still gets QoS 2). Nothing is acknowledged here: with manual_ack the owner acks. Call before
    connecting; on a paho without `_packet_read` (the private method this replaces), nothing changes.
    """
    if not hasattr(client, "_packet_read") or not hasattr(client, "_packet_handle"):
        return
    if client.protocol not in (mqtt.MQTTv31, mqtt.MQTTv311):  # MQTT 5 publishes carry properties
        return
    client._packet_read = PublishReader(client, deliver).read  # type: ignore[method-assign]


_PUBACK = struct.Struct("!BBH")


def send_pubacks(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages (manual_ack) in one packet write: paho's `ack()` queues a packet, wakes
    its network thread and costs a send() for each. From any thread, as `ack()`."""
    if not mids:
        return
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None:  # not paho 2.x: one at a time
        for mid in mids:
            client.ack(mid, 1)
        return
    pack = _PUBACK.pack
    queue_packet(mqtt.PUBACK, b"".join([pack(mqtt.PUBACK, 2, mid) for mid in mids]), 0, 0)
