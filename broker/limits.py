"""Connection limits of the embedded broker: how many, from where, how long before CONNECT.

amqtt accepts every connection, waits for a CONNECT without end and left a socket whose client closed
before CONNECT half-open (CLOSE-WAIT), so 1,100 idle connections used up a 1,024 file-descriptor limit
and took HTTP and MQTT down together. Here:

- at most `total` connections and `per_address` from one address are open; the next is closed at once,
  before a byte is read (MQTT 3.1.1 has no answer before CONNECT);
- a connection has `connect_timeout` seconds to send its CONNECT (enforced by broker.server);
- every connection's socket is closed when amqtt is done with it, whatever happened, within `LINGER`
  seconds even when its client stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from amqtt.adapters import WriterAdapter

# Seconds a finished connection may take to flush what it still has to send before it is cut.
LINGER = 1.0


class ConnectionLimits:
    """Counts open connections per address; `refused` counts those closed at once (broker.metrics)."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.refused = 0
        self._open: Counter[str] = Counter()
        self._count = 0

    @property
    def open(self) -> int:
        return self._count

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`, or False (not counted) if it is one too many."""
        if self._count >= self.total or self._open[address] >= self.per_address:
            self.refused += 1
            return False
        self._open[address] += 1
        self._count += 1
        return True

    def release(self, address: str) -> None:
        self._count -= 1
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


def _transport(writer: WriterAdapter) -> Any:
    stream = getattr(writer, "_writer", None)  # amqtt's StreamWriterAdapter (and ours) over asyncio streams
    return getattr(stream, "transport", None)


async def refuse(writer: WriterAdapter) -> None:
    """Drop a connection over the caps now (a TCP one unread, with a reset; a WebSocket one closed)."""
    transport = _transport(writer)
    if transport is not None:
        transport.abort()
    else:
        await shut(writer)


async def shut(writer: WriterAdapter) -> None:
    """Close the connection: flush what is queued for up to `LINGER` seconds, then cut it."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(LINGER):
            await writer.close()
    transport = _transport(writer)
    if transport is not None and not transport.is_closing():
        transport.abort()
