"""HTTP ingestion: the original's `/service/feed_input.json/<feed>/<axis>?x=&y=`, published to the broker.

auth (401) -> feed (404, or auto-created with the caller as owner) -> write permission (403) -> axis
(404 or auto-created) -> value (400 naming the field) -> QoS 1 publish, answered once acknowledged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp.casts import XCast
from rtdp.codec import Casts, Sample, encode, sample_from_fields
from rtdp.errors import InvalidInput, NotFound, PermissionDenied, RtdpError
from rtdp.models import Axis, Feed
from rtdp.permissions import Access, Principal, allowed
from rtdp.store import ensure_axis, ensure_feed, feed_casts
from rtdp.topic import FeedTopic, check_name
from viewer.access import check_query_size, read_body, read_object
from viewer.auth import require_principal
from viewer.errors import MethodNotAllowed
from viewer.state import ViewerState, viewer_state


@dataclass(frozen=True, slots=True)
class Target:
    """Where a caller may write, as decided once and cached for a few seconds."""

    topic: str
    feed: str
    axis: str
    casts: Casts


def resolve_target(principal: Principal, feed_name: str, axis_name: str, auto_create: bool) -> Target:
    """Synchronous (database pool): find or create the feed and axis, check the write permission."""
    feed = Feed.get_or_none(Feed.name == feed_name)
    if feed is None:
        if not auto_create:
            raise NotFound(f"no feed named {feed_name!r} (auto-create is off)", feed=feed_name)
        if principal.token_feed_id is not None or principal.token_access is Access.READ:
            raise PermissionDenied("this token may not create feeds", feed=feed_name)
        feed = ensure_feed(feed_name, principal.user_id)
    if not allowed(principal, feed, Access.WRITE):
        raise PermissionDenied(f"you may not write to feed {feed_name!r}", feed=feed_name)
    if not Axis.select(Axis.id).where((Axis.feed == feed.id) & (Axis.name == axis_name)).exists():
        if not auto_create:
            raise NotFound(f"feed {feed_name!r} has no axis {axis_name!r} (auto-create is off)", axis=axis_name)
        ensure_axis(feed, axis_name)
    return Target(str(FeedTopic(feed_name, axis_name)), feed_name, axis_name, feed_casts(feed))


async def writable_target(state: ViewerState, principal: Principal, feed: str, axis: str) -> Target:
    check_name(feed, "feed")
    check_name(axis, "axis")
    key = ("write", principal.cache_key, feed, axis)
    target: Target | None = state.decisions.get(key)
    if target is None:
        target = await state.run_db(resolve_target, principal, feed, axis, state.settings.auto_create)
        state.decisions.put(key, target)
    return target


def point_json(sample: Sample, casts: Casts) -> dict[str, Any]:
    x: float | int = int(sample.x) if casts.x is XCast.INT else sample.x
    y: float | int = sample.y if casts.y.value == "float" else int(sample.y)
    return {"x": x, "y": y}


async def _fields(request: Request, limit: int) -> dict[str, str]:
    fields = dict(request.query_params)
    if request.method == "POST":
        body = await read_body(request, limit)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and kind == "multipart/form-data":
            form = await request.form(max_files=0, max_fields=20)
            fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        elif body and kind == "application/json":
            document = await read_object(request, limit)
            fields.update({k: v if isinstance(v, str) else _json_text(v) for k, v in document.items()})
        elif body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("the form body is not UTF-8") from None
            fields.update(parse_qsl(text, keep_blank_values=True))
    return fields


def _json_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


async def feed_input(request: Request) -> Response:
    """Accept one point; 200 with the point only once the broker acknowledged it."""
    state = viewer_state(request)
    try:
        response = await _feed_input(request, state)
    except RtdpError as exc:
        state.metrics.ingest.labels(outcome=exc.code).inc()
        raise
    state.metrics.ingest.labels(outcome="accepted").inc()
    state.metrics.ingest_points.inc()
    return response


async def _feed_input(request: Request, state: ViewerState) -> Response:
    if request.method not in ("GET", "POST"):
        raise MethodNotAllowed(f"method {request.method} not allowed; use GET or POST")
    check_query_size(request)
    principal = await require_principal(request)
    target = await writable_target(state, principal, request.path_params["feed"], request.path_params["axis"])
    fields = await _fields(request, state.settings.max_payload)
    sample = sample_from_fields(
        fields.get("x"), fields.get("y"), target.casts, now=time.time(), tz=state.settings.tz
    )
    await state.publisher.publish(target.topic, encode([sample]))
    return JSONResponse({"feed": target.feed, "axis": target.axis, **point_json(sample, target.casts)})


def ingest_routes() -> list[BaseRoute]:
    methods = ["GET", "POST"]
    return [
        Route("/service/feed_input.json/{feed}/{axis}", feed_input, methods=methods),
        Route("/realtime_data_processor/service/feed_input.json/{feed}/{axis}", feed_input, methods=methods),
    ]
