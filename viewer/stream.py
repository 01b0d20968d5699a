"""`GET /api/v1/feeds/<feed>/stream`: Server-Sent Events of stored points, resumable by Last-Event-ID.

Order matters for "no gap, no duplicate": subscribe to the hub first, then replay from the database
what came after Last-Event-ID, then pass live events, dropping any already replayed (id <= last sent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from rtdp.codec import Casts
from rtdp.errors import InvalidInput, RtdpError
from rtdp.models import MAX_ID, Feed
from rtdp.notices import StoredEvent, stream_data
from rtdp.store import feed_casts, points_after
from viewer.access import find_feed
from viewer.auth import principal_from_request
from viewer.hub import RECHECK, Subscription
from viewer.state import ViewerState, viewer_state

REPLAY_PAGE = 5000
_NOTHING = StoredEvent(0, "", 0.0, 0.0)  # no event within the recheck period


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


def _event(event: StoredEvent, casts: Casts) -> ServerSentEvent:
    return ServerSentEvent(data=stream_data(event, casts), event="point", id=str(event.id))


async def _events(
    state: ViewerState,
    feed: Feed,
    sub: Subscription,
    last_id: int | None,
    still_allowed: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEvent]:
    casts = feed_casts(feed)
    # Live events up to here were replayed already. Only those are dropped: with several bridges,
    # notices may arrive slightly out of id order, and a later lower id is still news.
    replayed = -1
    try:
        if last_id is not None:
            replayed = last_id
            while True:
                rows = await state.run_db(points_after, feed, replayed, REPLAY_PAGE)
                for point_id, axis, x, y in rows:
                    yield _event(StoredEvent(point_id, axis, x, y), casts)
                    replayed = point_id
                if len(rows) < REPLAY_PAGE:
                    break
        # A stream can stay open for days: who may read it is asked again every heartbeat period, so a
        # revoked token or a disabled user ends it (the cached answers expire), and at once when the
        # rights changed (a share removed, the feed made private: the hub sends RECHECK).
        recheck = state.settings.sse_heartbeat
        next_check = time.monotonic() + recheck
        while True:
            try:
                event = await asyncio.wait_for(sub.get(), timeout=recheck)
            except TimeoutError:
                event = _NOTHING
            if event is RECHECK or time.monotonic() >= next_check:
                if not await still_allowed():
                    return
                next_check = time.monotonic() + recheck
            if event is _NOTHING or event is RECHECK:
                continue
            if event is None:
                return  # dropped for falling behind, or the server is stopping: the client resumes
            if event.id > replayed:
                yield _event(event, casts)
    finally:
        # Also on cancellation (client gone): the subscription must not outlive the stream.
        sub.close()


async def stream_route(request: Request) -> Response:
    """Live stored points of one feed; event `point`, id = point id, data `{"id","axis","x","y"}`."""
    state = viewer_state(request)
    principal = await principal_from_request(request)
    last_id = _last_event_id(request)
    feed = await state.run_db(find_feed, principal, request.path_params["feed"])
    sub = state.hub.subscribe(feed.name)

    async def still_allowed() -> bool:
        try:
            again = await principal_from_request(request)
            await state.run_db(find_feed, again, feed.name)
        except RtdpError:
            return False
        return True

    headers: dict[str, Any] = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    response: Response = EventSourceResponse(
        _events(state, feed, sub, last_id, still_allowed),
        ping=state.settings.sse_heartbeat,
        headers=headers,
        # Runs even if the generator never started (client gone before the first byte).
        background=BackgroundTask(sub.close),
    )
    return response
