"""Fewer system calls for paho: its socket reads served from one large buffer (bridge and viewer).

paho (2.x) reads every packet with at least three `recv` calls (the command byte, the remaining length,
then the rest), each after a `select`. For a stream of small QoS 1 publishes that is most of the
network thread's time, and the network thread is what limits the bridge at one point per message.
`BufferedSocket` takes whatever the kernel holds in one `recv` of up to 64 KiB and hands it out as
paho asks; its `pending()` tells paho (as an SSL socket does) that bytes are already waiting, so paho
reads them without another `select`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import paho.mqtt.client as mqtt

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
