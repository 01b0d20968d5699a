"""A point handed from HTTP ingestion to the writer inside one process (`rtdp serve`, embedded broker).

Over MQTT the viewer publishes the canonical payload and the writer decodes it again: what comes from a
broker is not trusted. In `rtdp serve` the viewer's check (rtdp.catalog) and its cast are the writer's
own, so the samples travel with the message and are stored as they are, unless the writer's route has
other casts than the viewer used (the feed was recreated meanwhile): then the payload is decoded as any
message. `receipt` is resolved on the event loop once the batch committed: None when stored, or the
error that refused the point.

The other way, `NoticeTap` hands the writer's stored notices to the viewer's SSE hub in the same
process, without the viewer's loopback MQTT subscription (a PUBLISH written, read and parsed again on
the same loop per notice). MQTT subscribers of `rtdp/stored/...` still get them from the broker.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rtdp.codec import Casts, Sample
from rtdp.errors import RtdpError
from rtdp.topic import ALERTS_PREFIX, STORED_PREFIX

_STORED = STORED_PREFIX + "/"
# Alerts too (rtdp.alert_actions): the SSE hub shows them as browser notifications.
_PASSED = (_STORED, ALERTS_PREFIX + "/")


@dataclass(frozen=True, slots=True)
class Handoff:
    casts: Casts
    samples: Sequence[Sample]
    receipt: asyncio.Future[RtdpError | None]


class Direct(Protocol):
    """The in-process entry for HTTP points (broker.server.EmbeddedBroker)."""

    async def ingest(self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample], timeout: float) -> None:
        """(topic, canonical payload, casts, samples, timeout in seconds): returns once stored, raises RtdpError
        when refused or unavailable, TimeoutError when not stored in time (it may still be)."""

    def offer(self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample]) -> Receipt | None:
        """`ingest` without waiting when that can be done at once: the receipt (no timer on it), or None
        (nothing done: call `ingest`)."""


# Takes the notices (topic, payload) posted since it was last called, in order, on the event loop.
NoticeHandler = Callable[[list[tuple[str, bytes]]], None]


class NoticeTap:
    """Stored notices from the writer thread to a handler on the viewer's event loop (`rtdp serve`).

    `post` is called on the writer thread for every notice it publishes (and by the alert actions' threads)
    and passes on only the stored and alert ones, once `attach` (on the loop) named the handler; before
    that, and after `detach`, it drops them:
    a stream that opens later replays from the database with Last-Event-ID. Notices posted while the loop
    has not yet taken the previous ones go to the handler together, in one call (and one wake-up of the
    loop): the SSE hub then writes them to each client at once instead of one write per notice."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: NoticeHandler | None = None
        self._lock = threading.Lock()
        self._posted: list[tuple[str, bytes]] = []

    def attach(self, handler: NoticeHandler) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = handler

    def detach(self) -> None:
        self._handler = None

    def post(self, topic: str, payload: bytes) -> None:
        loop = self._loop
        if self._handler is None or loop is None or not topic.startswith(_PASSED):
            return
        with self._lock:
            self._posted.append((topic, payload))
            if len(self._posted) > 1:
                return  # the loop was woken for the first one and takes this one with it
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop closed: nobody streams any more
            with self._lock:
                self._posted.clear()

    def _deliver(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, []
        handler = self._handler
        if handler is not None:
            handler(posted)


# A receipt: None once the points are stored, or the error that refused them.
Receipt = asyncio.Future[RtdpError | None]


class Expiry:
    """Receipts resolved with `expired()` unless resolved within `timeout` seconds, with one timer for all
    of them, where a timer armed and cancelled per point was a visible share of an HTTP point's time on the loop.

    On the event loop only. Receipts are watched in the order they are handed over, which is the order the
    writer resolves them in (one queue, FIFO), so the oldest unresolved one is the next to expire. The
    timer runs at least every `SWEEP` seconds while any is watched, to let go of the resolved ones."""

    SWEEP = 0.25

    def __init__(self, timeout: float, expired: Callable[[], RtdpError]) -> None:
        self.timeout = timeout
        self.expired = expired
        self._due: deque[tuple[float, Receipt]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, receipt: Receipt) -> None:
        # The receipt's loop is the running one; get_running_loop() would cost a getpid() system call.
        loop = receipt.get_loop()
        self._due.append((loop.time() + self.timeout, receipt))
        if self._timer is None:
            self._timer = loop.call_later(min(self.timeout, self.SWEEP), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now, due = loop.time(), self._due
        while due:
            deadline, receipt = due[0]
            if not receipt.done():
                if deadline > now:
                    break
                receipt.set_result(self.expired())
            due.popleft()
        if due:
            self._timer = loop.call_at(min(due[0][0], now + self.SWEEP), self._sweep, loop)
