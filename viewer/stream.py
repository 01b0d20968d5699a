"""`GET /api/v1/feeds/<feed>/stream`: Server-Sent Events of stored points, resumable by Last-Event-ID.
`GET /api/v1/stream?feed=A&feed=B`: the same for several feeds on one connection (a dashboard's), each
event's data naming its feed; the caller must be allowed to read every one of them (the rule of one feed).

Order matters for "no gap, no duplicate": subscribe to the hub first, then replay from the database
what came after Last-Event-ID, then pass live events, dropping any already replayed (id <= last sent).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rtdp.errors import InvalidInput, RtdpError
from rtdp.models import MAX_ID, Feed
from rtdp.notices import StoredEvent
from rtdp.permissions import Principal
from rtdp.store import feed_casts, feed_head, points_after
from viewer.access import find_feed
from viewer.auth import principal_from_request
from viewer.connection import WIRE
from viewer.hub import PING, Subscription, Wire, point_frame
from viewer.state import ViewerState, viewer_state

REPLAY_PAGE = 5000
# The server's own send, which ViewerApp leaves in the scope: a stream writes its body through it.
RAW_SEND = "rtdp.raw_send"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput("Last-Event-ID must be a point id (an integer)", field="last_event_id") from None
    if number < 0:
        raise InvalidInput("Last-Event-ID must not be negative", field="last_event_id")
    if number > MAX_ID:
        raise InvalidInput(f"Last-Event-ID must be at most {MAX_ID}", field="last_event_id")
    return number


class EventStream(Response):
    """The stream itself, written as plain ASGI: the hub's frames go out as they are, all that queued since the
    last write in one chunk, with a ping comment every heartbeat. sse-starlette (a task group, a memory stream
    and an encoding per event and client) cost more than everything else once a thousand clients listened."""

    def __init__(
        self,
        state: ViewerState,
        feeds: list[Feed],
        sub: Subscription,
        last_id: int | None,
        still_allowed: Callable[[], Awaitable[bool]],
    ) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.feeds = feeds
        self.sub = sub
        self.last_id = last_id
        self.still_allowed = still_allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Also when the client is gone before the first byte: the subscription must not outlive the stream.
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            # The start went through the middleware (session cookie, error handling, access log); the body
            # skips it: none of it reads or changes a body, and its send wrappers were a fifth of the event
            # loop's time in a profile at 50,000 events/s. For the same reason the writing runs in a task
            # of its own: each wake-up resumes that shallow task, not the dozen frames of the ASGI stack.
            body_send: Send = scope.get(RAW_SEND, send)
            # Once live, the hub writes events to the socket itself while this stream's task waits (viewer.hub);
            # without the server's Wire (another ASGI server, a test client) every event goes through `send`.
            wire: Wire | None = scope.get(WIRE)
            listener = asyncio.create_task(self._listen(receive))
            writer = asyncio.create_task(self._run(body_send, wire))
            try:
                await writer
            finally:
                listener.cancel()
                writer.cancel()
            await body_send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.sub.close()

    async def _listen(self, receive: Receive) -> None:
        # uvicorn's send() returns quietly once the client left: only receive() tells, and ends the stream now.
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.stop()

    async def _run(self, send: Send, wire: Wire | None) -> None:
        state, sub = self.state, self.sub
        # Live events up to here were replayed already. Only those are dropped: with several bridges,
        # notices may arrive slightly out of id order, and a later lower id is still news.
        replayed = -1
        if self.last_id is not None:
            replayed = self.last_id
            for feed in self.feeds:
                casts = feed_casts(feed)
                tag = feed.name if sub.tagged else None
                after = self.last_id
                while True:
                    rows = await state.run_db(points_after, feed, after, REPLAY_PAGE)
                    if rows:
                        body = b"".join(point_frame(StoredEvent(*row), casts, tag)[1] for row in rows)
                        await _write(send, body)
                        after = rows[-1][0]
                        replayed = max(replayed, after)
                    if len(rows) < REPLAY_PAGE or sub.ended:
                        break
        # A stream can stay open for days: who may read it is asked again every heartbeat period, so a
        # revoked token or a disabled user ends it (the cached answers expire), and at once when the
        # rights changed (a share removed, the feed made private: the hub asks for a recheck).
        loop = asyncio.get_running_loop()
        period = state.settings.sse_heartbeat
        # The first heartbeat somewhere in the second half of the period: streams opened together (a restart,
        # a benchmark) would otherwise all check their rights and ping in the same moment, every period.
        tick = loop.time() + period * (0.5 + random.random() / 2)
        sub.go_live(wire, replayed)
        while True:
            await sub.wait(tick)
            if sub.ended:
                return  # cut for falling behind, the client left, or the server is stopping: the client resumes
            frames = sub.take()
            if frames:
                if frames[0][0] > replayed:
                    body = b"".join(frame for _, frame in frames)
                else:
                    body = b"".join(frame for point_id, frame in frames if point_id > replayed)
                if body:
                    await _write(send, body)
            if sub.recheck_due:
                sub.recheck_due = False
                if not await self.still_allowed():
                    return
            if loop.time() >= tick:
                if not await self.still_allowed():
                    return
                await _write(send, PING)
                tick = loop.time() + period


async def _may_still_read(state: ViewerState, request: Request, names: list[str]) -> bool:
    """Whether the stream's reader may still read every one of `names`: its credentials as any request's, and
    the answer for the feeds reused for `decision_ttl` by every stream of the same reader (a thousand streams
    asking the database each period cost more than their events); a change of rights clears it at once."""
    try:
        principal = await principal_from_request(request)
        key = ("stream", principal.cache_key if principal is not None else None, *names)
        if state.decisions.get(key) is None:
            await state.run_db(lambda: [find_feed(principal, name) for name in names])
            state.decisions.put(key, True)
    except RtdpError:
        return False
    return True


async def _write(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def stream_route(request: Request) -> Response:
    """Live stored points of one feed; event `point`, id = point id, data `{"id","axis","x","y"}`."""
    state = viewer_state(request)
    principal = await principal_from_request(request)
    last_id = _last_event_id(request)
    feed = await state.run_db(find_feed, principal, request.path_params["feed"])
    # Where the feed stood before subscribing: the first stream of a feed tells viewer.order, which passes
    # on what was committed after it in commit order (with nothing awaited between the two).
    head = await state.run_db(feed_head, feed)
    if state.order is not None:
        state.order.watch(feed.name, head)
    # Subscribed before the replay starts, so nothing stored meanwhile falls between the two.
    sub = state.hub.subscribe(feed.name, feed_casts(feed))

    async def still_allowed() -> bool:
        return await _may_still_read(state, request, [feed.name])

    return EventStream(state, [feed], sub, last_id, still_allowed)


MAX_STREAM_FEEDS = 64


async def multi_stream_route(request: Request) -> Response:
    """Live stored points of several feeds (`?feed=A&feed=B`, at most MAX_STREAM_FEEDS); event `point`, id =
    point id, data `{"feed","id","axis","x","y"}`."""
    state = viewer_state(request)
    principal = await principal_from_request(request)
    last_id = _last_event_id(request)
    names = list(dict.fromkeys(request.query_params.getlist("feed")))
    if not names or len(names) > MAX_STREAM_FEEDS:
        raise InvalidInput(f"give 1 to {MAX_STREAM_FEEDS} feed parameters", field="feed")

    def find_all(who: Principal | None) -> list[Feed]:
        return [find_feed(who, name) for name in names]

    feeds = await state.run_db(find_all, principal)
    # As for one feed: where each stood before subscribing, for viewer.order (nothing awaited in between).
    heads = await state.run_db(lambda: [feed_head(feed) for feed in feeds])
    if state.order is not None:
        for feed, head in zip(feeds, heads, strict=True):
            state.order.watch(feed.name, head)
    sub = state.hub.subscribe_many({feed.name: feed_casts(feed) for feed in feeds})

    async def still_allowed() -> bool:
        return await _may_still_read(state, request, names)

    return EventStream(state, feeds, sub, last_id, still_allowed)
