"""The SSE hub: stored points from the broker fanned out to per-client bounded queues.

Runs on the event loop only (viewer.publisher drives paho on that loop and calls `dispatch` there). A client
whose queue is full is dropped, not waited for: it reconnects with Last-Event-ID and replays from the
database, so a slow browser never slows ingestion or anyone else.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from rtdp.notices import StoredEvent

# Not a point: asks the stream to check again at once whether its reader may still read (the rights
# changed somewhere, rtdp.revision).
RECHECK = StoredEvent(-1, "", 0.0, 0.0)


class Subscription:
    """One SSE client's queue. `None` in the queue means: stop (dropped, or the server is closing)."""

    def __init__(self, hub: Hub, feed: str, size: int) -> None:
        self.hub = hub
        self.feed = feed
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue(maxsize=size)
        self.dropped = False

    def offer(self, event: StoredEvent) -> bool:
        """Queue `event`; False (and the client is told to stop) when the queue is full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.stop(dropped=True)
            return False

    def stop(self, *, dropped: bool = False) -> None:
        self.dropped = self.dropped or dropped
        # Empty the queue so the stop marker always fits; the client replays what it missed.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def get(self) -> StoredEvent | None:
        return await self.queue.get()

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Hub:
    queue_size: int
    on_drop: Callable[[], None] = lambda: None
    _feeds: dict[str, set[Subscription]] = field(default_factory=lambda: defaultdict(set))
    closed: bool = False

    def subscribe(self, feed: str) -> Subscription:
        sub = Subscription(self, feed, self.queue_size)
        if self.closed:
            sub.stop()
        else:
            self._feeds[feed].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._feeds.get(sub.feed)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._feeds[sub.feed]

    def watched(self, feed: str) -> bool:
        """Whether any stream listens to `feed` (else its stored notices need not even be parsed)."""
        return feed in self._feeds

    @property
    def client_count(self) -> int:
        return sum(len(subs) for subs in self._feeds.values())

    def dispatch(self, feed: str, events: list[StoredEvent]) -> None:
        for sub in list(self._feeds.get(feed, ())):
            for event in events:
                if not sub.offer(event):
                    self.unsubscribe(sub)
                    self.on_drop()
                    break

    def recheck(self) -> None:
        """Rights changed: every stream asks again whether its reader may still read its feed."""
        for feed in list(self._feeds):
            self.dispatch(feed, [RECHECK])

    def close(self) -> None:
        """Server shutdown: every stream ends."""
        self.closed = True
        for subs in list(self._feeds.values()):
            for sub in list(subs):
                sub.stop()
        self._feeds.clear()
