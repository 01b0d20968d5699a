"""MQTT packets written byte by byte, for what no well-behaved client sends (tests of the packet gate)."""

from __future__ import annotations

import socket
import struct

from broker.gate import encode_length

__all__ = ["encode_length"]


def field(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack("!H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_length(len(body)) + body


def connect(
    username: str, password: str, *, client_id: str = "raw", protocol: bytes = b"\x00\x04MQTT\x04", clean: bool = True
) -> bytes:
    flags = 0xC0 | (0x02 if clean else 0)  # username and password
    body = protocol + bytes((flags,)) + struct.pack("!H", 60) + field(client_id) + field(username) + field(password)
    return packet(0x10, body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    body = field(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def subscribe(topic_filter: str, qos_byte: int = 1, packet_id: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + field(topic_filter) + bytes((qos_byte,)))


def open_socket(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(30)  # a broker that neither answers nor closes fails the test instead of hanging it
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the broker sends until it closes the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One packet from the broker: (first byte, body)."""
    first = read_exactly(sock, 1)[0]
    length, shift = 0, 0
    while True:
        digit = read_exactly(sock, 1)[0]
        length += (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    return first, read_exactly(sock, length) if length else b""


def publish_fields(first: int, body: bytes) -> tuple[str, bytes, int, bool, int | None]:
    """A PUBLISH's topic, payload, QoS, DUP flag and packet id."""
    qos = (first >> 1) & 3
    size = struct.unpack("!H", body[:2])[0]
    topic = body[2 : 2 + size].decode()
    pos = 2 + size
    packet_id = struct.unpack("!H", body[pos : pos + 2])[0] if qos else None
    return topic, body[pos + (2 if qos else 0) :], qos, bool(first & 0x08), packet_id
