"""Connection limits of the embedded broker: how many, from where, how long before CONNECT.

amqtt accepts every connection, waits for a CONNECT without end and left a socket whose client closed
before CONNECT half-open (CLOSE-WAIT), so 1,100 idle connections used up a 1,024 file-descriptor limit
and took HTTP and MQTT down together. Here:

- at most `total` connections and `per_address` from one address are open; the next is closed at once,
  before a byte is read (MQTT 3.1.1 has no answer before CONNECT);
- a connection has `connect_timeout` seconds to send its CONNECT (enforced by broker.server);
- every connection's socket is closed when amqtt is done with it, whatever happened, within `LINGER`
  seconds even when its client stopped reading.

And one rate: a publish queued for offline persistent sessions costs the broker's loop one copy per
session (100 sessions subscribed to a feed: 100 copies per message), so one user flooding such a feed
held the loop that every other client and HTTP share (issue 11's `sessions` attack: the well-behaved
user's PUBACKs at p99 280 ms). `CopyBudget` gives each user `rate` copies a second (a second's worth at
once); beyond, the connection that published is not read for about as long as the user needs to be back
within it (at most a second at a time, broker.acks' MAX_PAUSE, then again at its next publish over the
budget), which is MQTT's own back-pressure, as for RTDP_MQTT_INFLIGHT: nothing is refused or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from amqtt.adapters import WriterAdapter

# Seconds a finished connection may take to flush what it still has to send before it is cut.
LINGER = 1.0
# Users whose budget is tracked at once; beyond, those back to a full budget are forgotten.
BUDGET_USERS = 4096


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


class CopyBudget:
    """Offline-session copies per user and second: a token bucket per user, `rate` a second, holding at
    most `rate` (one second's burst). `throttled` counts the pauses asked for (broker.metrics)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.throttled = 0
        self._users: dict[object, tuple[float, float]] = {}  # user: (copies left, when, loop time)

    def charge(self, user: object, copies: int, now: float) -> float:
        """Count `copies` queued by `user`'s publish at `now`: the seconds that user's publishing connection
        should not be read (0.0: none)."""
        rate = self.rate
        left, at = self._users.get(user, (rate, now))
        left = min(rate, left + (now - at) * rate) - copies
        if len(self._users) >= BUDGET_USERS and user not in self._users:
            self._forget(now)
        self._users[user] = (left, now)
        if left >= 0:
            return 0.0
        self.throttled += 1
        return -left / rate

    def _forget(self, now: float) -> None:
        rate = self.rate
        full = [user for user, (left, at) in self._users.items() if left + (now - at) * rate >= rate]
        for user in full:
            del self._users[user]
