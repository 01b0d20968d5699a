"""MQTT 3.1.1 packets as bytes, for raw sockets that behave as no well-behaved client would (never
reading, never sending CONNECT): the broker's limit tests and bench/attack.py."""

from __future__ import annotations

import struct


def field(text: str | bytes) -> bytes:
    """A length-prefixed string (section 1.5.3)."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    """The fixed header (first byte, remaining length as MQTT's variable-length integer) and `body`."""
    length, encoded = len(body), bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes((first,)) + bytes(encoded) + body


def connect(username: str, password: str, client_id: str = "raw", *, clean: bool = True, keepalive: int = 60) -> bytes:
    flags = 0xC0 | (0x02 if clean else 0)  # username and password
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack("!H", keepalive)
    return packet(0x10, body + field(client_id) + field(username) + field(password))


def publish_qos1(topic: str, payload: bytes, packet_id: int) -> bytes:
    return packet(0x32, field(topic) + struct.pack("!H", packet_id) + payload)


def subscribe(topic_filter: str, qos: int = 1, packet_id: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + field(topic_filter) + bytes((qos,)))


CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
DISCONNECT = b"\xe0\x00"
