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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

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


# The in-process entry (broker.server.EmbeddedBroker.ingest): (topic, canonical payload, casts, samples,
# timeout in seconds); returns once stored, raises RtdpError when refused or unavailable, TimeoutError
# when not stored in time (it may still be).
DirectWrite = Callable[[str, bytes, Casts, Sequence[Sample], float], Awaitable[None]]


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
