"""The SSE hub: stored points from the broker, encoded once per feed and fanned out to bounded per-client queues.

Runs on the event loop only (viewer.publisher drives paho on that loop and calls `dispatch` there). Each
event becomes its SSE frame (`id:`, `event: point`, `data:`) once, and the same bytes object goes to every
subscriber of the feed: with a thousand clients, encoding per client was most of the work. A client whose
queue is full is cut, not waited for: its stream ends and it resumes with Last-Event-ID from the database,
so a slow or stalled client never slows ingestion or anyone else.

A live stream whose task is idle is written to directly (its `Wire`, from viewer.connection): the frames
joined once per delivery, the same bytes to the socket of every such client, no task woken per client and
event. Waking a thousand tasks for each event, each then writing through the ASGI send, cost a third of the
process's CPU with 1,000 clients (bench/README.md); the socket writes themselves are now nearly all that is
left. Only a stream whose socket is full (the kernel's buffer and the transport's) or that is busy (replay,
heartbeat) queues frames for its task; there the queue's bounds cut it as above. Notices that came
together (the loop was busy: `held`) are delivered together, so that past its capacity the process writes
fewer, larger chunks instead of falling behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from rtdp.codec import Casts
from rtdp.notices import StoredEvent, stream_data

# One event on the wire as sse-starlette wrote it before (CRLF lines), so clients see the same bytes.
FRAME = b"id: %d\r\nevent: point\r\ndata: %s\r\n\r\n"
PING = b": ping\r\n\r\n"
# An alert (rtdp.alert_actions' JSON) on the feed's streams: no `id:` line, so a client's Last-Event-ID
# stays its last point's; its frame id is above every point's, so no stream skips it as replayed.
ALERT_FRAME = b"event: alert\r\ndata: %s\r\n\r\n"
ALERT_ID = 2**63

DEFAULT_CASTS = Casts()

# (point id, its SSE frame): the id lets a stream skip what its replay already sent.
Frame = tuple[int, bytes]


class Wire(Protocol):
    """A stream's own way to its socket, past the ASGI send (viewer.connection.Wire)."""

    def ready(self) -> bool:
        """Whether a write now goes out at once: the client is there and its socket is not full."""
        ...

    def write(self, body: bytes, chunk: bytes | None = None) -> None:
        """Write `body` as the response's next bytes (`chunk`: the same already framed as one HTTP chunk)."""
        ...


class Joined:
    """One delivery's frames for one group of streams, joined (and framed as one HTTP chunk) once, when the
    first stream written directly needs them, for all of them."""

    __slots__ = ("frames", "_body", "_chunk")

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self._body: bytes | None = None
        self._chunk: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            frames = self.frames
            self._body = frames[0][1] if len(frames) == 1 else b"".join(frame for _, frame in frames)
        return self._body

    @property
    def chunk(self) -> bytes:
        if self._chunk is None:
            body = self.body
            self._chunk = b"%x\r\n%s\r\n" % (len(body), body)
        return self._chunk


def point_frame(event: StoredEvent, casts: Casts, feed: str | None = None) -> Frame:
    """The SSE frame of one stored point: data `{"id","axis","x","y"}`, x and y shown as the feed casts them
    (with `"feed"` first on a stream of several feeds)."""
    return event.id, FRAME % (event.id, stream_data(event, casts, feed).encode())


class Subscription:
    """One SSE client's queue of frames: at most `size` of them, and once the stream is live (it took from
    the queue: its replay is over) none waiting longer than `max_lag` seconds. `ended` once cut or the
    server closes. A stream of several feeds (a dashboard's) is one subscription on each, `tagged`: its
    frames name their feed."""

    def __init__(
        self, hub: Hub, feeds: dict[str, Casts], size: int, max_lag: float, *, tagged: bool = False
    ) -> None:
        self.hub = hub
        self.feeds = feeds
        self.tagged = tagged
        self.size = size
        self.max_lag = max_lag
        self.frames: list[Frame] = []
        # When the oldest queued frame came (hub clock); None before the first take, while replaying.
        self.since: float | None = None
        self.live = False
        self.ended = False
        self.dropped = False
        # Rights changed somewhere (rtdp.revision): the stream asks at once whether its reader still may read.
        self.recheck_due = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        # Set by `go_live`: the stream's socket, written directly while its task waits with nothing queued,
        # and the newest id its replay sent (frames up to it are not sent again).
        self.wire: Wire | None = None
        self.floor = -1
        self._parked = False

    def go_live(self, wire: Wire | None, floor: int) -> None:
        """The replay is over (it sent ids up to `floor`): from now on frames may go straight to `wire`."""
        self.wire, self.floor, self.live = wire, floor, True

    def offer(self, frames: list[Frame], now: float, joined: Joined | None = None) -> bool:
        """Write `frames` at once when the stream is idle and its socket takes them, else queue them; False
        (and the stream is told to end) when they do not fit, or when what is queued has waited too long: a
        client that falls behind is cut, not waited for by everyone. `joined`: the same frames, joined once for
        every stream of the delivery."""
        if self.ended:
            return False
        wire = self.wire
        # More than the queue holds in one delivery counts as falling that far behind, written or not (below).
        if self._parked and wire is not None and not self.frames and len(frames) <= self.size and wire.ready():
            if frames[0][0] > self.floor:
                if joined is None:
                    joined = Joined(frames)
                wire.write(joined.body, joined.chunk)
            else:  # some were replayed already (rare: notices out of id order around a resume)
                body = b"".join(frame for point_id, frame in frames if point_id > self.floor)
                if body:
                    wire.write(body)
            return True
        if len(self.frames) + len(frames) > self.size or (
            self.since is not None and self.frames and now - self.since > self.max_lag
        ):
            self.stop(dropped=True)
            return False
        if not self.frames and self.live:
            self.since = now
        self.frames.extend(frames)
        self._wake()
        return True

    def stop(self, *, dropped: bool = False) -> None:
        """End the stream; what is queued is forgotten (the client replays what it missed)."""
        self.dropped = self.dropped or dropped
        self.ended = True
        self.frames = []
        self._wake()

    def ask_recheck(self) -> None:
        self.recheck_due = True
        self._wake()

    def take(self) -> list[Frame]:
        """Everything queued, oldest first, and the queue empty again."""
        frames, self.frames = self.frames, []
        self.live = True
        self.since = None
        return frames

    async def wait(self, deadline: float) -> None:
        """Until frames are queued, the stream is ended, or the loop's clock reaches `deadline`."""
        loop = asyncio.get_running_loop()
        if self.frames or self.ended or self.recheck_due or loop.time() >= deadline:
            return
        # One timer per deadline (the heartbeat), kept across waits: a timer per wait, ten waits a second
        # per client, was a tenth of the event loop's time with a thousand clients.
        if self._timer is None or self._deadline != deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._deadline = loop.call_at(deadline, self._wake), deadline
        waiter = self._waiter = loop.create_future()
        # Frames offered meanwhile go straight to the socket (once live): nothing else writes to it now.
        self._parked = True
        try:
            await waiter
        finally:
            self._parked = False
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _wake(self._waiter)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class Hub:
    queue_size: int
    # Seconds a live stream's queued frames may wait (settings.sse_max_lag).
    max_lag: float = 1.0
    on_drop: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    # feed -> (the casts its streams show points with, whether frames name the feed) -> those streams. One
    # casts per feed but for the moments after a feed was recreated with other casts, when older streams
    # still show the old ones.
    _feeds: dict[str, dict[tuple[Casts, bool], set[Subscription]]] = field(default_factory=lambda: defaultdict(dict))
    closed: bool = False
    # Within `held`: what to deliver at its end, (feed, events or an alert's payload) in order.
    _pending: list[tuple[str, list[StoredEvent] | bytes]] | None = None

    def subscribe(self, feed: str, casts: Casts = DEFAULT_CASTS) -> Subscription:
        return self.subscribe_many({feed: casts}, tagged=False)

    def subscribe_many(self, feeds: dict[str, Casts], *, tagged: bool = True) -> Subscription:
        """One stream of several feeds' points (each feed with its casts), their frames naming their feed."""
        sub = Subscription(self, feeds, self.queue_size, self.max_lag, tagged=tagged)
        if self.closed:
            sub.stop()
        else:
            for feed, casts in feeds.items():
                self._feeds[feed].setdefault((casts, tagged), set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for feed, casts in sub.feeds.items():
            groups = self._feeds.get(feed)
            if groups is None:
                continue
            key = (casts, sub.tagged)
            subs = groups.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del groups[key]
            if not groups:
                del self._feeds[feed]

    def watched(self, feed: str) -> bool:
        """Whether any stream listens to `feed` (else its stored notices need not even be parsed)."""
        return feed in self._feeds

    @property
    def client_count(self) -> int:
        # A stream of several feeds is in several sets: counted once.
        return len({id(sub) for groups in self._feeds.values() for subs in groups.values() for sub in subs})

    @contextmanager
    def held(self) -> Iterator[None]:
        """Within the block, dispatches and alerts are gathered and delivered at its end, a feed's events that
        follow each other as one delivery (viewer.app wraps each batch of notices taken off the loop in it)."""
        if self._pending is not None:
            yield
            return
        pending: list[tuple[str, list[StoredEvent] | bytes]] = []
        self._pending = pending
        try:
            yield
        finally:
            self._pending = None
            for feed, item in pending:
                if isinstance(item, bytes):
                    self._alert(feed, item)
                else:
                    self._dispatch(feed, item)

    def dispatch(self, feed: str, events: list[StoredEvent]) -> None:
        pending = self._pending
        if pending is None:
            self._dispatch(feed, events)
        elif pending and pending[-1][0] == feed and isinstance(last := pending[-1][1], list):
            last.extend(events)
        else:
            pending.append((feed, list(events)))

    def _dispatch(self, feed: str, events: list[StoredEvent]) -> None:
        if not events:
            return
        now = self.clock()
        for (casts, tagged), subs in list(self._feeds.get(feed, {}).items()):
            frames = [point_frame(event, casts, feed if tagged else None) for event in events]
            joined = Joined(frames)
            for sub in list(subs):
                if not sub.offer(frames, now, joined):
                    self._ended(sub)

    def _ended(self, sub: Subscription) -> None:
        # Cut for falling behind: counted (rtdp_sse_dropped_clients); a stream that had ended on its own
        # (its client left, its rights went) and was not unsubscribed yet is not.
        self.unsubscribe(sub)
        if sub.dropped:
            self.on_drop()

    def alert(self, feed: str, payload: bytes) -> None:
        """An alert on `feed` for each of its streams (the browser shows a notification)."""
        if b"\n" in payload or b"\r" in payload:
            return  # one data line: our JSON never has one
        if self._pending is not None:
            self._pending.append((feed, payload))
        else:
            self._alert(feed, payload)

    def _alert(self, feed: str, payload: bytes) -> None:
        frames = [(ALERT_ID, ALERT_FRAME % payload)]
        joined = Joined(frames)
        now = self.clock()
        for subs in list(self._feeds.get(feed, {}).values()):
            for sub in list(subs):
                if not sub.offer(frames, now, joined):
                    self._ended(sub)

    def recheck(self) -> None:
        """Rights changed: every stream asks again whether its reader may still read its feed."""
        for groups in self._feeds.values():
            for subs in groups.values():
                for sub in subs:
                    sub.ask_recheck()

    def close(self) -> None:
        """Server shutdown: every stream ends."""
        self.closed = True
        for groups in list(self._feeds.values()):
            for subs in list(groups.values()):
                for sub in list(subs):
                    sub.stop()
        self._feeds.clear()
