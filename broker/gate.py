"""The packet gate: every MQTT packet a client sends is read whole and checked before amqtt parses it.

amqtt 0.12.1 parses straight from the socket and trusts what it reads: a PUBLISH before CONNECT, a
reserved packet type, QoS 3, bad fixed-header flags or a malformed remaining length were logged and
skipped with the connection left open; an MQTT 5 CONNECT (its properties misparsed) left the client
waiting for a CONNACK until its own timeout; a 64 MB PUBLISH was read into memory whatever the payload
limit. MQTT 3.1.1 says a server closes the connection on any protocol violation (section 4.8), and so
does the gate, before amqtt sees the packet:

- the first packet must be a CONNECT, and only the first; client-to-server packet types only, with
  the fixed-header flags section 2.2.2 prescribes (QoS 3 in a PUBLISH is malformed);
- MQTT 3.1.1 (level 4) is spoken. MQTT 3.1 (`MQIsdp`, level 3) is accepted as 3.1.1: its packets
  have the same layout, and the gate rewrites the CONNECT's protocol name and level for amqtt. Any
  other level of `MQTT` (5 in particular) gets a CONNACK with return code 1, "unacceptable protocol
  version", at once, then the close, so a client fails fast or falls back to 3.1.1;
- a PUBLISH whose payload is larger than `max_payload` is refused from its first bytes (the remaining
  length and the topic length give the payload's size), never buffered; other packets are bounded
  by what their fields can hold;
- a SUBSCRIBE must ask for QoS 0, 1 or 2 with the reserved bits clear, and a (UN)SUBSCRIBE must name
  at least one filter.

Whole packets also help amqtt: its many small reads are served from memory, not from the stream.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.adapters import ReaderAdapter, WriterAdapter

from rtdp.logs import RateLimitedLog

logger = logging.getLogger(__name__)

CONNECT, PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 6, 8, 10, 12, 14

# Client-to-server packet types and the fixed-header flags each must carry (None: PUBLISH's own flags).
_FLAGS: dict[int, int | None] = {
    CONNECT: 0, PUBLISH: None, 4: 0, 5: 0, PUBREL: 2, 7: 0, SUBSCRIBE: 2, UNSUBSCRIBE: 2, PINGREQ: 0, DISCONNECT: 0
}
# The most any packet but a PUBLISH can need: a CONNECT with five fields of at most 64 KiB each, plus
# its 10-byte variable header. (A SUBSCRIBE beyond that would be thousands of filters.)
_OTHER_LIMIT = 10 + 5 * (2 + 0xFFFF)

_MQTT_311 = b"\x00\x04MQTT\x04"
_MQTT_31 = b"\x00\x06MQIsdp\x03"
_UNACCEPTABLE_PROTOCOL_VERSION = b"\x20\x02\x00\x01"
# Most bytes taken from the socket in one read.
CHUNK = 65536


class ProtocolViolation(Exception):
    """Why the gate closes a connection (logged, rate-limited, never raised to amqtt)."""


def encode_length(length: int) -> bytes:
    """MQTT's variable-length encoding of a remaining length (section 2.2.3)."""
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


class PacketGate(ReaderAdapter):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """amqtt's reader for one connection: whole packets, checked (see the module docstring).

    `source` is the connection's own reader (TCP or WebSocket), `writer` the one amqtt writes to. A
    violation closes the connection and reads as the end of the stream, so amqtt handles it as a
    dropped connection: the will, if any, is published (MQTT 3.1.1 section 3.1.2.5). The counter
    object counts the connections closed here, across all gates sharing it."""

    def __init__(self, source: ReaderAdapter, writer: WriterAdapter, max_payload: int, counter: GateCounter) -> None:
        self._source = source
        self._writer = writer
        self._max_payload = max_payload
        self._counter = counter
        self._packet = b""
        self._pos = 0
        self._connected = False
        self._closed = False
        self._buffer = bytearray()  # bytes read and not yet parsed
        self._missing = 1  # bytes the buffer lacks for its next packet (at least)
        stream = getattr(source, "_reader", None)  # amqtt's StreamReaderAdapter: read what the socket has
        self._stream: asyncio.StreamReader | None = stream if isinstance(stream, asyncio.StreamReader) else None

    async def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._packet) and not await self._next_packet():
            return b""
        end = len(self._packet) if n < 0 else self._pos + n
        if end > len(self._packet):
            # amqtt's parse wants more than the remaining length holds: a malformed packet.
            await self._refuse(ProtocolViolation("a packet shorter than its fields"))
            return b""
        data = self._packet[self._pos : end]
        self._pos = end
        return data

    def feed_eof(self) -> None:
        self._source.feed_eof()

    async def packet(self) -> bytes | None:
        """The next whole packet (fixed header included), checked; None at the end of the stream or after a
        violation. For broker.fastpath, which parses PUBLISH packets itself and hands any other packet
        back with `unread` for amqtt to parse."""
        if self._pos < len(self._packet):
            packet = self._packet[self._pos :]
            self._packet, self._pos = b"", 0
            return packet
        if not await self._next_packet():
            return None
        packet, self._packet = self._packet, b""
        return packet

    def unread(self, packet: bytes) -> None:
        """Serve `packet` to the next reads (amqtt's parse of a packet taken with `packet()`)."""
        self._packet, self._pos = packet, 0

    async def _next_packet(self) -> bool:
        if self._closed:
            return False
        try:
            self._packet, self._pos = await self._read_packet(), 0
        except ProtocolViolation as exc:
            await self._refuse(exc)
            return False
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            return False  # the client went away: amqtt sees the end of the stream
        return True

    def packet_now(self) -> bytes | None:
        """The next whole packet if the bytes already read hold one (after CONNECT), else None: then await
        `packet()`, which also reports a violation. Nothing is awaited, no timer armed (broker.fastpath)."""
        if self._closed or not self._connected or self._pos < len(self._packet):
            return None
        try:
            return self._parse()
        except ProtocolViolation:
            return None  # `packet()` parses it again and refuses it

    async def _read_packet(self) -> bytes:
        while True:
            packet = self._parse()
            if packet is not None:
                return packet
            await self._fill()

    async def _fill(self) -> None:
        # What the socket has, up to CHUNK bytes, in one read: amqtt read each field (a byte of the
        # remaining length at a time) with an await of its own. Other sources (WebSocket): the bytes missing.
        stream = self._stream
        data = await stream.read(CHUNK) if stream is not None else await self._source.read(self._missing)
        if not data:
            raise EOFError
        self._buffer += data

    def _parse(self) -> bytes | None:
        """Take the first whole packet off the buffer, checked; None (and `_missing` set) if incomplete."""
        buffer = self._buffer
        size = len(buffer)
        pos, length = 1, 0
        for position in range(4):
            if pos >= size:
                self._missing = 1
                return None
            digit = buffer[pos]
            pos += 1
            length += (digit & 0x7F) << (7 * position)
            if not digit & 0x80:
                break
        else:
            raise ProtocolViolation("a remaining length of more than four bytes")
        first = buffer[0]
        kind, flags = first >> 4, first & 0x0F
        if kind not in _FLAGS:
            raise ProtocolViolation(f"packet type {kind}, which a client may not send")
        if (kind == CONNECT) == self._connected:
            raise ProtocolViolation("a second CONNECT" if self._connected else f"packet type {kind} before CONNECT")
        expected = _FLAGS[kind]
        if expected is not None and flags != expected:
            raise ProtocolViolation(f"packet type {kind} with flags {flags:#x}")
        if kind == PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3:
                raise ProtocolViolation("a PUBLISH with QoS 3")
            if length < 2:
                raise ProtocolViolation("a PUBLISH without topic")
            if size < pos + 2:
                self._missing = pos + 2 - size
                return None
            fields = 2 + int.from_bytes(buffer[pos : pos + 2], "big") + (2 if qos else 0)
            if length - fields > self._max_payload:
                # Refused on its first bytes: the payload is neither read nor buffered.
                raise ProtocolViolation(f"a PUBLISH payload of {length - fields} bytes (limit {self._max_payload})")
        elif length > _OTHER_LIMIT:
            raise ProtocolViolation(f"packet type {kind} of {length} bytes")
        end = pos + length
        if size < end:
            self._missing = end - size
            return None
        packet = bytes(buffer[:end])
        del buffer[:end]
        if kind == CONNECT:
            body = self._check_connect(packet[pos:])
            self._connected = True
            return bytes((first,)) + encode_length(len(body)) + body
        if kind in (SUBSCRIBE, UNSUBSCRIBE):
            _check_filters(packet[pos:], with_qos=kind == SUBSCRIBE)
        return packet

    def _check_connect(self, body: bytes) -> bytes:
        if body.startswith(_MQTT_311):
            return body
        if body.startswith(_MQTT_31):
            return _MQTT_311 + body[len(_MQTT_31) :]
        if body.startswith(b"\x00\x04MQTT") and len(body) > 6:
            # Another version of MQTT: say so (a 3.1.1 CONNACK, which every version's client reads) and close.
            self._writer.write(_UNACCEPTABLE_PROTOCOL_VERSION)  # sent by the close
            raise ProtocolViolation(f"MQTT protocol level {body[6]} (only 3.1.1 and 3.1 are spoken)")
        raise ProtocolViolation("a CONNECT for another protocol")

    async def _refuse(self, violation: ProtocolViolation) -> None:
        self._closed = True
        self._packet, self._pos = b"", 0
        self._counter.refused += 1
        peer = self._writer.get_peer_info()
        self._counter.log.warning("violation", "MQTT connection from %s closed: %s", peer, violation)
        try:
            await self._writer.drain()  # a CONNACK written just before (a WebSocket sends only then)
            await self._writer.close()
        except OSError:
            pass  # already gone


class GateCounter:
    """Connections the gates of one broker closed for protocol violations, and their rate-limited log."""

    def __init__(self) -> None:
        self.refused = 0
        self.log = RateLimitedLog(logger)


def _check_filters(body: bytes, *, with_qos: bool) -> None:
    """A (UN)SUBSCRIBE's payload: at least one filter, each whole, each SUBSCRIBE QoS byte 0, 1 or 2."""
    pos, count = 2, 0  # after the packet id
    while pos < len(body):
        if pos + 2 > len(body):
            raise ProtocolViolation("a topic filter cut short")
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
        if with_qos:
            if pos >= len(body):
                raise ProtocolViolation("a SUBSCRIBE filter without QoS")
            if body[pos] > 2:
                raise ProtocolViolation(f"a SUBSCRIBE requesting QoS byte {body[pos]:#x}")
            pos += 1
        count += 1
    if pos > len(body) or count == 0:
        raise ProtocolViolation("a SUBSCRIBE or UNSUBSCRIBE without a whole topic filter")
