"""HTTP ingestion: the original's `/service/feed_input.json/<feed>/<axis>?x=&y=`, handed to the broker.

auth (401) -> feed (404, or auto-created with the caller as owner: 403 beyond their feed quota) -> write
permission (403) -> axis (404 or auto-created) -> value (400 naming the field) -> to the broker, answered
once acknowledged (`ViewerState.hand_over`). Feed, axis, permission and quota are rtdp.catalog's.

The value is cast here, for the 400 and for the answer. Over MQTT it is published in the canonical form
and the writer decodes it again, as any MQTT message: what comes from the broker is not trusted (anyone
with write access may publish to `feeds/...`, and a feed may have been recreated with other casts
since); for the canonical form that is the codec's fast path, about a microsecond a point. In `rtdp
serve` the point goes to the embedded broker and the writer inside the process, and the samples cast
here are stored as they are unless the feed's casts changed meanwhile (rtdp.handoff).

Two entries, one pipeline. What scripts send - GET with an Authorization header - takes `ingest_asgi`, a
pure ASGI path in front of Starlette's middleware (errors, session cookie, exceptions) and router: that
machinery cost more than the publish itself. Those requests never use the session (the header wins in
viewer.auth), so skipping the session middleware changes nothing. Everything else (POST bodies, HEAD,
no header: a session with its CSRF header, or a 401) goes through the Starlette route `feed_input`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope, Send

from rtdp import catalog
from rtdp.casts import XCast
from rtdp.codec import Casts, Sample, sample_from_fields
from rtdp.errors import InvalidInput, RtdpError
from rtdp.handoff import Receipt
from rtdp.permissions import Principal
from rtdp.topic import FeedTopic, check_name
from viewer.access import MAX_QUERY, check_query_size, read_body, read_object
from viewer.auth import cached_principal, require_principal
from viewer.errors import MethodNotAllowed, URITooLong, error_parts
from viewer.state import ViewerState, once, viewer_state

log = logging.getLogger(__name__)

PATHS = ("/service/feed_input.json/", "/realtime_data_processor/service/feed_input.json/")
JSON_HEADER = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a caller may write (the catalog's answer) and what the answer needs, cached for a few seconds."""

    place: catalog.Target
    topic: str
    # The answer's constant start, `{"feed":...,"axis":...`, encoded once.
    prefix: bytes

    @property
    def casts(self) -> Casts:
        return self.place.casts


def _target(place: catalog.Target) -> Target:
    prefix = json.dumps({"feed": place.feed, "axis": place.axis}, ensure_ascii=False, separators=(",", ":"))[:-1]
    return Target(place, str(FeedTopic(place.feed, place.axis)), prefix.encode())


def _resolve(principal: Principal, feed: str, axis: str, policy: catalog.Policy, create: bool) -> Target:
    return _target(catalog.resolve(principal, feed, axis, policy, create=create))


async def writable_target(state: ViewerState, principal: Principal, feed: str, axis: str) -> Target:
    """Checked, nothing created yet: a feed or axis auto-create would make gives a pending target (bad
    input must create nothing, so they are made only once a value passed, in `checked_sample`)."""
    target = cached_target(state, principal, feed, axis)
    if target is not None:
        return target
    return await once(state.deciding, ("write", principal.cache_key, feed, axis),
                      partial(_decide, state, principal, feed, axis))


async def _decide(state: ViewerState, principal: Principal, feed: str, axis: str) -> Target:
    generation = state.generation
    target = await state.run_db(_resolve, principal, feed, axis, state.policy, False)
    if not target.place.pending and state.generation == generation:  # not read before a change of rights
        state.decisions.put(("write", principal.cache_key, feed, axis), target)
    return target


def cached_target(state: ViewerState, principal: Principal, feed: str, axis: str) -> Target | None:
    """`writable_target` decided lately (never a pending one), or None; raises for a bad name."""
    check_name(feed, "feed")
    check_name(axis, "axis")
    target: Target | None = state.decisions.get(("write", principal.cache_key, feed, axis))
    return target


async def checked_sample(
    state: ViewerState, principal: Principal, target: Target, fields: dict[str, str]
) -> tuple[Target, Sample]:
    """The request's point, valid for `target`; a pending feed or axis is created only now."""
    now = time.time()
    sample = sample_from_fields(fields.get("x"), fields.get("y"), target.casts, now=now, tz=state.settings.tz)
    if target.place.pending:
        casts = target.casts
        target = await state.run_db(_resolve, principal, target.place.feed, target.place.axis, state.policy, True)
        state.decisions.put(("write", principal.cache_key, target.place.feed, target.place.axis), target)
        if target.casts != casts:  # someone created the feed meanwhile, with other casts
            sample = sample_from_fields(fields.get("x"), fields.get("y"), target.casts, now=now, tz=state.settings.tz)
    return target, sample


def point_json(sample: Sample, casts: Casts) -> dict[str, Any]:
    x: float | int = int(sample.x) if casts.x is XCast.INT else sample.x
    y: float | int = sample.y if casts.y.value == "float" else int(sample.y)
    return {"x": x, "y": y}


def answer(target: Target, sample: Sample) -> bytes:
    """The 200 body, byte for byte what JSONResponse would send (repr of a finite float is its JSON)."""
    point = point_json(sample, target.casts)
    return b"%s,\"x\":%s,\"y\":%s}" % (target.prefix, repr(point["x"]).encode(), repr(point["y"]).encode())


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
        state.metrics.count_ingest(exc.code)
        raise
    state.metrics.ingestion.accepted()
    return response


async def _feed_input(request: Request, state: ViewerState) -> Response:
    if request.method not in ("GET", "POST"):
        raise MethodNotAllowed(f"method {request.method} not allowed; use GET or POST")
    check_query_size(request)
    principal = await require_principal(request)
    target = await writable_target(state, principal, request.path_params["feed"], request.path_params["axis"])
    fields = await _fields(request, state.settings.max_payload)
    target, sample = await checked_sample(state, principal, target, fields)
    await state.hand_over(target.topic, target.casts, [sample])
    return Response(answer(target, sample), media_type="application/json")


def lean_path(scope: Scope) -> tuple[str, str] | None:
    """(feed, axis) when `lean_answer` should answer this request, else None (the Starlette app does).

    A request with forwarded-for headers goes the long way too: uvicorn's proxy-headers middleware
    rewrites its client address (the password throttle's key) there."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if not path.startswith(PATHS):
        return None
    # Only the exact two-segment form the Starlette route accepts; anything else gets its 404 there.
    feed, sep, axis = path[path.index("feed_input.json/") + 16 :].partition("/")
    if not (feed and sep and axis) or "/" in axis:
        return None
    authorized = False
    for name, _ in scope["headers"]:
        if name == b"authorization":
            authorized = True
        elif name.startswith(b"x-forwarded-"):
            return None
    return (feed, axis) if authorized else None


# A lean answer: status, body (JSON) and the headers after content-type and content-length.
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


async def lean_answer(state: ViewerState, scope: Scope, feed: str, axis: str) -> Answer:
    """The lean path for GET with an Authorization header (see the module docstring): same checks,
    same answers, same metrics as `feed_input`, without Starlette's per-request layers."""
    try:
        body = await _ingest(state, scope, feed, axis)
    except RtdpError as exc:
        return _refusal(state, exc)
    except Exception:
        return _crash(scope)
    return _accepted(state, body)


def lean_now(state: ViewerState, scope: Scope, feed: str, axis: str, reply: Callable[[Answer], None]) -> bool:
    """`lean_answer` without a task or a coroutine, when all it needs is at hand: credentials and write
    decision checked lately (cached), and a broker that takes the point at once (`rtdp serve`). The checks
    run now, in the same order, and `reply` gets the same answer: at once for a refusal, once committed for
    a point. False, and nothing done, when something must be waited for: then `lean_answer`. This spares
    each point a task and six coroutines on the loop."""
    try:
        query = _checked_query(scope)
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        principal = cached_principal(state, header.decode("latin-1")) if header else None
        target = cached_target(state, principal, feed, axis) if principal is not None else None
        if target is None:
            return False
        fields = query_fields(query)
        casts = target.casts
        sample = sample_from_fields(fields.get("x"), fields.get("y"), casts, now=time.time(), tz=state.settings.tz)
        return state.hand_over_now(target.topic, casts, [sample], partial(_stored, state, target, sample, reply))
    except RtdpError as exc:
        reply(_refusal(state, exc))
    except Exception:
        reply(_crash(scope))
    return True


def _stored(
    state: ViewerState, target: Target, sample: Sample, reply: Callable[[Answer], None], receipt: Receipt
) -> None:
    error = receipt.result()
    reply(_accepted(state, answer(target, sample)) if error is None else _refusal(state, error))


def _accepted(state: ViewerState, body: bytes) -> Answer:
    state.metrics.ingestion.accepted()
    return 200, body, []


def _refusal(state: ViewerState, exc: RtdpError) -> Answer:
    state.metrics.count_ingest(exc.code)
    status, document, headers = error_parts(exc)
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return status, json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(), raw


def _crash(scope: Scope) -> Answer:
    # As Starlette's ServerErrorMiddleware would: logged here, the client only learns that something broke.
    log.exception("unhandled error on GET %s", scope["path"])
    return 500, b'{"error":"internal server error","code":"error"}', []


async def ingest_asgi(state: ViewerState, scope: Scope, feed: str, axis: str, send: Send) -> int:
    """`lean_answer` sent through ASGI (viewer.app.ViewerApp, e.g. under a test client; uvicorn's
    connections take viewer.connection's shorter way). Returns the status."""
    status, body, headers = await lean_answer(state, scope, feed, axis)
    raw = [JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
    return status


async def _ingest(state: ViewerState, scope: Scope, feed: str, axis: str) -> bytes:
    query = _checked_query(scope)
    principal = await require_principal(HTTPConnection(scope))
    target = await writable_target(state, principal, feed, axis)
    target, sample = await checked_sample(state, principal, target, query_fields(query))
    await state.hand_over(target.topic, target.casts, [sample])
    return answer(target, sample)


def _checked_query(scope: Scope) -> bytes:
    query: bytes = scope["query_string"]
    if len(query) > MAX_QUERY:
        raise URITooLong(f"query string longer than {MAX_QUERY} bytes")
    return query


def query_fields(query: bytes) -> dict[str, str]:
    """As Starlette's QueryParams: latin-1, blanks kept, the last of repeated fields wins. Without `%`
    or `+` nothing needs unquoting, and splitting by hand is ~8x cheaper than parse_qsl."""
    text = query.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    fields: dict[str, str] = {}
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            fields[name] = value
    return fields


def ingest_routes() -> list[BaseRoute]:
    methods = ["GET", "POST"]
    return [
        Route("/service/feed_input.json/{feed}/{axis}", feed_input, methods=methods),
        Route("/realtime_data_processor/service/feed_input.json/{feed}/{axis}", feed_input, methods=methods),
    ]
