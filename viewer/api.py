"""The JSON API under /api/v1: feeds, axes, points (query and batch ingest) and export."""

from __future__ import annotations

import asyncio
import math
import time
import unicodedata
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import peewee as pw
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from rtdp import catalog, export, sharing
from rtdp.casts import XCast, cast_x, y_json
from rtdp.codec import MAX_BATCH, Casts, Sample, repeated_x, sample_from_fields
from rtdp.errors import Conflict, InvalidInput
from rtdp.models import Axis, Feed, User
from rtdp.permissions import Access, Principal, readable_feeds
from rtdp.settings import Settings
from rtdp.store import check_retention, create_axis, feed_casts, get_axis, query_points
from rtdp.topic import FeedTopic, check_name
from viewer.access import check_query_size, find_feed, find_managed_feed, read_json, read_object
from viewer.auth import principal_from_request, require_principal
from viewer.state import ViewerState, viewer_state

EXPORT_PAGE = 5000
MAX_DESCRIPTION = 2000
MAX_UNIT = 32
MAX_LABEL = 64


# JSON shapes


def x_json(x: float, cast: XCast) -> float | int:
    return int(x) if cast is XCast.INT else x


def axis_json(axis: Axis, casts: Casts) -> dict[str, Any]:
    return {
        "name": axis.name,
        "point_count": axis.point_count,
        "last_x": None if axis.last_x is None else x_json(axis.last_x, casts.x),
        "last_y": None if axis.last_y is None else y_json(axis.last_y, casts.y),
        "last_seen": axis.last_seen,
        "unit": axis.unit,
        "label": axis.label,
    }


def feed_json(feed: Feed, axes: list[Axis], owner: str) -> dict[str, Any]:
    casts = feed_casts(feed)
    return {
        "name": feed.name,
        "owner": owner,
        "x_cast": feed.x_cast,
        "y_cast": feed.y_cast,
        "description": feed.description,
        "public": bool(feed.public),
        "retention_days": feed.retention_days,
        "retention_points": feed.retention_points,
        "created": feed.created,
        "axes": [axis_json(a, casts) for a in sorted(axes, key=lambda a: a.name)],
    }


def _feeds_json(feeds: list[Feed]) -> list[dict[str, Any]]:
    if not feeds:
        return []
    ids = [f.id for f in feeds]
    axes: dict[int, list[Axis]] = defaultdict(list)
    for axis in Axis.select().where(Axis.feed.in_(ids)):
        axes[axis.feed_id].append(axis)  # type: ignore[attr-defined]
    owner_ids = {_owner_id(f) for f in feeds}
    owners = {u.id: u.display_name or u.email.split("@")[0] for u in User.select().where(User.id.in_(owner_ids))}
    return [feed_json(f, axes[f.id], owners.get(_owner_id(f), "")) for f in feeds]


def _owner_id(feed: Feed) -> int:
    owner_id: int = feed.owner_id  # type: ignore[attr-defined]
    return owner_id


# Synchronous work (database pool)


def _list_feeds(principal: Principal | None) -> list[dict[str, Any]]:
    feeds: list[Feed] = list(readable_feeds(principal).order_by(Feed.name))  # type: ignore[arg-type]
    return _feeds_json(feeds)


def _get_feed(principal: Principal | None, name: str) -> dict[str, Any]:
    return _feeds_json([find_feed(principal, name)])[0]


def _bool_field(body: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


def _number_field(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidInput(f"{name} must be a number or null", field=name)
    return value


def _count_field(body: dict[str, Any], name: str) -> int | None:
    """A whole number or null. JSON's 1e400 decodes to infinity, and int() would silently cut 1.5 to 1."""
    value = _number_field(body, name)
    if value is None:
        return None
    if not math.isfinite(value) or value != int(value):
        raise InvalidInput(f"{name} must be a whole number or null", field=name)
    return int(value)


def _text_field(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if name == "description" and len(value) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is longer than {MAX_DESCRIPTION} characters", field=name)
    return value


def _create_feed(principal: Principal, body: dict[str, Any], quota: int) -> dict[str, Any]:
    unknown = set(body) - {"name", "x_cast", "y_cast", "description", "public", "retention_days", "retention_points"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:100]}")
    spec = catalog.FeedSpec(
        x_cast=_text_field(body, "x_cast", "datetime"),
        y_cast=_text_field(body, "y_cast", "float"),
        description=_text_field(body, "description"),
        public=bool(_bool_field(body, "public", False)),
        retention_days=_number_field(body, "retention_days"),
        retention_points=_count_field(body, "retention_points"),
    )
    # The name is checked by the store, as every feed name.
    feed = catalog.new_feed(principal, _text_field(body, "name"), quota, spec)
    return _feeds_json([feed])[0]


def _update_feed(principal: Principal, name: str, body: dict[str, Any]) -> dict[str, Any]:
    feed = find_managed_feed(principal, name)
    unknown = set(body) - {"description", "public", "retention_days", "retention_points"}
    if unknown:
        raise InvalidInput(f"unknown or read-only field(s): {', '.join(sorted(unknown))[:100]}")
    if "description" in body:
        feed.description = _text_field(body, "description")
    if "public" in body and bool(_bool_field(body, "public")) != feed.public:
        # Through rtdp.sharing: who may read changes, and every process must learn it at once.
        feed.public = sharing.set_public(principal, name, bool(body["public"])).public
    if "retention_days" in body:
        feed.retention_days = _number_field(body, "retention_days")
    if "retention_points" in body:
        feed.retention_points = _count_field(body, "retention_points")
    check_retention(feed.retention_days, feed.retention_points)
    feed.save()
    return _feeds_json([feed])[0]


def _delete_feed(principal: Principal, name: str) -> None:
    feed = find_managed_feed(principal, name)
    with Feed._meta.database.atomic():
        feed.delete_instance(recursive=True)


def _get_axis(principal: Principal | None, name: str, axis_name: str) -> tuple[Feed, Axis]:
    feed = find_feed(principal, name)
    return feed, get_axis(feed, axis_name)


def _list_axes(principal: Principal | None, name: str) -> list[dict[str, Any]]:
    feed = find_feed(principal, name)
    casts = feed_casts(feed)
    return [axis_json(a, casts) for a in Axis.select().where(Axis.feed == feed.id).order_by(Axis.name)]


def _create_axis(principal: Principal, name: str, body: dict[str, Any], quota: int) -> dict[str, Any]:
    feed = find_feed(principal, name, Access.WRITE)
    axis = create_axis(feed, _text_field(body, "name"), quota=quota)
    return axis_json(axis, feed_casts(feed))


def _display_field(body: dict[str, Any], name: str, limit: int) -> str | None:
    """An axis's unit or label: a short single-line string; null or "" removes it."""
    value = body[name]
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string or null", field=name)
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters", field=name)
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise InvalidInput(f"{name} must be one line of printable characters", field=name)
    return value or None


def _update_axis(principal: Principal, name: str, axis_name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Rename an axis and/or set its unit and label (any of "name", "unit", "label")."""
    feed = find_managed_feed(principal, name)
    axis = get_axis(feed, axis_name)
    unknown = sorted(set(body) - {"name", "unit", "label"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}: an axis has name, unit and label", field=unknown[0])
    new_name = check_name(_text_field(body, "name", axis.name), "axis")
    if "unit" in body:
        axis.unit = _display_field(body, "unit", MAX_UNIT)
    if "label" in body:
        axis.label = _display_field(body, "label", MAX_LABEL)
    axis.name = new_name
    try:
        with Axis._meta.database.atomic():
            axis.save()
    except pw.IntegrityError:
        raise Conflict(f"feed {name!r} already has an axis named {new_name!r}", field="name") from None
    return axis_json(axis, feed_casts(feed))


def _delete_axis(principal: Principal, name: str, axis_name: str) -> None:
    feed = find_managed_feed(principal, name)
    axis = get_axis(feed, axis_name)
    with Axis._meta.database.atomic():
        axis.delete_instance(recursive=True)


# Query parameters


def _x_param(request: Request, name: str, cast: XCast, state: ViewerState) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return cast_x(value, cast, state.settings.tz)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("x ", f"{name} ", 1), field=name) from None


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {value[:40]!r}", field=name) from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}", field=name)
    return number


def _bool_param(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise InvalidInput(f"{name} must be true or false", field=name)


# Handlers


async def list_feeds(request: Request) -> Response:
    state = viewer_state(request)
    principal = await principal_from_request(request)
    return JSONResponse({"feeds": await state.run_db(_list_feeds, principal)})


async def create_feed_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    body = await read_object(request, state.settings.max_payload)
    return JSONResponse(await state.run_db(_create_feed, principal, body, state.settings.feed_quota), status_code=201)


async def feed_route(request: Request) -> Response:
    state = viewer_state(request)
    name = request.path_params["feed"]
    if request.method == "GET":
        principal = await principal_from_request(request)
        return JSONResponse(await state.run_db(_get_feed, principal, name))
    principal = await require_principal(request)
    if request.method == "PATCH":
        body = await read_object(request, state.settings.max_payload)
        result = await state.run_db(_update_feed, principal, name, body)
        await state.rights.check(changed=True)
        return JSONResponse(result)
    await state.run_db(_delete_feed, principal, name)
    state.forget_decisions()
    return Response(status_code=204)


async def axes_route(request: Request) -> Response:
    state = viewer_state(request)
    name = request.path_params["feed"]
    if request.method == "GET":
        principal = await principal_from_request(request)
        return JSONResponse({"feed": name, "axes": await state.run_db(_list_axes, principal, name)})
    principal = await require_principal(request)
    body = await read_object(request, state.settings.max_payload)
    created = await state.run_db(_create_axis, principal, name, body, state.settings.axis_quota)
    return JSONResponse(created, status_code=201)


async def axis_route(request: Request) -> Response:
    state = viewer_state(request)
    name, axis_name = request.path_params["feed"], request.path_params["axis"]
    if request.method == "GET":
        principal = await principal_from_request(request)
        feed, axis = await state.run_db(_get_axis, principal, name, axis_name)
        return JSONResponse(axis_json(axis, feed_casts(feed)))
    principal = await require_principal(request)
    if request.method == "PATCH":
        body = await read_object(request, state.settings.max_payload)
        result = await state.run_db(_update_axis, principal, name, axis_name, body)
        state.forget_decisions()
        return JSONResponse(result)
    await state.run_db(_delete_axis, principal, name, axis_name)
    state.forget_decisions()
    return Response(status_code=204)


async def points_route(request: Request) -> Response:
    """`{"feed","axis","points":[{"id","x","y"}]}` oldest first; since/until in the feed's x type."""
    state = viewer_state(request)
    check_query_size(request)
    principal = await principal_from_request(request)
    name, axis_name = request.path_params["feed"], request.path_params["axis"]
    feed, axis = await state.run_db(_get_axis, principal, name, axis_name)
    casts = feed_casts(feed)
    since = _x_param(request, "since", casts.x, state)
    until = _x_param(request, "until", casts.x, state)
    limit = _int_param(request, "limit", 1, 100_000)
    max_points = _int_param(request, "max_points", 2, 100_000)
    newest = _bool_param(request, "newest")
    rows = await state.run_db(
        query_points, axis, since=since, until=until, limit=limit, max_points=max_points, newest=newest
    )
    points = [{"id": i, "x": x_json(x, casts.x), "y": y_json(y, casts.y)} for i, x, y in rows]
    return JSONResponse({"feed": feed.name, "axis": axis.name, "points": points})


def _samples(document: list[Any], axis_names: list[str], casts: Casts, settings: Settings) -> dict[str, list[Sample]]:
    """Every element cast for the feed, by axis; the first bad one refuses the whole batch, by index.

    Two elements with one x on one axis are refused too (`codec.repeated_x`, the rule of every entrance)."""
    now = time.time()
    by_axis: dict[str, list[Sample]] = defaultdict(list)
    indices: dict[str, list[int]] = defaultdict(list)  # each sample's element index, by axis
    for index, (item, axis_name) in enumerate(zip(document, axis_names, strict=True)):
        try:
            sample = sample_from_fields(item.get("x"), item.get("y"), casts, now=now, tz=settings.tz)
        except InvalidInput as exc:
            raise InvalidInput(f"element {index}: {exc.message}", index=index, **exc.detail) from None
        by_axis[axis_name].append(sample)
        indices[axis_name].append(index)
    repeats = []
    for axis_name, samples in by_axis.items():
        repeat = repeated_x(samples)
        if repeat is not None:
            positions = indices[axis_name]
            repeats.append((positions[repeat[1]], positions[repeat[0]], axis_name))
    if repeats:
        index, first, axis_name = min(repeats)
        raise InvalidInput(
            f"element {index}: same x as element {first} on axis {axis_name!r}; give each point its own x",
            index=index,
            field="x",
        )
    return by_axis


async def batch_points(request: Request) -> Response:
    """Validate every element first (all or nothing), then one canonical publish per axis, all acknowledged."""
    state = viewer_state(request)
    principal = await require_principal(request)
    name = request.path_params["feed"]
    check_name(name, "feed")
    document = await read_json(request, state.settings.max_payload)
    if not isinstance(document, list) or not document:
        raise InvalidInput("the body must be a non-empty JSON array of {\"axis\", \"x\", \"y\"} objects")
    if len(document) > MAX_BATCH:
        raise InvalidInput(f"batch of {len(document)} points exceeds the limit of {MAX_BATCH}")
    axis_names: list[str] = []
    for index, item in enumerate(document):
        if not isinstance(item, dict) or not isinstance(item.get("axis"), str):
            raise InvalidInput(f"element {index}: must be an object with a string 'axis'", index=index)
        if set(item) - {"axis", "x", "y"}:
            raise InvalidInput(f"element {index}: unknown field(s)", index=index)
        try:
            check_name(item["axis"], "axis")
        except InvalidInput as exc:
            raise InvalidInput(f"element {index}: {exc.message}", index=index, field="axis") from None
        axis_names.append(item["axis"])
    distinct = set(axis_names)
    if len(distinct) > state.settings.http_max_pending:
        # One publish per axis, and no more than http_max_pending may await the broker: such a batch
        # could never be accepted whole, only stored in part and answered 503 at every retry.
        raise InvalidInput(
            f"batch spans {len(distinct)} axes; at most {state.settings.http_max_pending} per request"
        )
    settings = state.settings
    axes = sorted(distinct)
    places = await state.run_db(catalog.resolve_axes, principal, name, axes, state.policy, create=False)
    casts = places[0].casts
    by_axis = _samples(document, axis_names, casts, settings)
    # Only now: a batch refused for a bad element creates nothing.
    if any(place.pending for place in places):
        places = await state.run_db(catalog.resolve_axes, principal, name, axes, state.policy, create=True)
        if places[0].casts != casts:  # someone created the feed meanwhile, with other casts
            by_axis = _samples(document, axis_names, places[0].casts, settings)
    publishes = [
        state.hand_over(str(FeedTopic(name, axis_name)), places[0].casts, samples)
        for axis_name, samples in by_axis.items()
    ]
    results = await asyncio.gather(*publishes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            # Some axes may have been stored: a retry is harmless, every message carries its x.
            raise result
    state.metrics.count_points(len(document))
    return JSONResponse({"feed": name, "accepted": len(document), "axes": sorted(by_axis)})


def _export_plan(principal: Principal | None, name: str, axis_name: str | None) -> tuple[Feed, list[Axis]]:
    feed = find_feed(principal, name)
    if axis_name:
        return feed, [get_axis(feed, axis_name)]
    return feed, list(Axis.select().where(Axis.feed == feed.id).order_by(Axis.name))


async def export_route(request: Request) -> Response:
    """CSV (`x,y`, or `axis,x,y` for several axes) or a JSON array, streamed page by page."""
    state = viewer_state(request)
    check_query_size(request)
    principal = await principal_from_request(request)
    kind = request.query_params.get("format", "csv")
    if kind not in ("csv", "json"):
        raise InvalidInput("format must be csv or json", field="format")
    feed, axes = await state.run_db(
        _export_plan, principal, request.path_params["feed"], request.query_params.get("axis")
    )
    casts = feed_casts(feed)
    since = _x_param(request, "since", casts.x, state)
    until = _x_param(request, "until", casts.x, state)
    several = len(axes) > 1
    body = _export_csv(state, axes, casts, since, until, several) if kind == "csv" else _export_json(
        state, axes, casts, since, until
    )
    filename = f"{feed.name}.{kind}"
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8" if kind == "csv" else "application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _pages(
    state: ViewerState, axes: list[Axis], since: float | None, until: float | None
) -> AsyncIterator[tuple[Axis, list[tuple[int, float, float]]]]:
    # Keyset pages, one database call each: a cursor must not wander between pool threads.
    for axis in axes:
        cursor = since
        first = True
        while True:
            rows = await state.run_db(query_points, axis, since=cursor, until=until, limit=EXPORT_PAGE + 1)
            if not first and cursor is not None:
                rows = [r for r in rows if r[1] > cursor]  # the page starts at the last x already sent
            if rows:
                yield axis, rows
            if len(rows) < EXPORT_PAGE:
                break
            cursor = rows[-1][1]
            first = False


async def _export_csv(
    state: ViewerState, axes: list[Axis], casts: Casts, since: float | None, until: float | None, several: bool
) -> AsyncIterator[str]:
    yield export.csv_header(several)
    async for axis, rows in _pages(state, axes, since, until):
        yield export.csv_lines(axis.name, ((x, y) for _, x, y in rows), casts, several)


async def _export_json(
    state: ViewerState, axes: list[Axis], casts: Casts, since: float | None, until: float | None
) -> AsyncIterator[str]:
    yield "["
    first = True
    async for axis, rows in _pages(state, axes, since, until):
        points = export.json_points(axis.name, ((x, y) for _, x, y in rows), casts, axis.unit)
        yield ("" if first else ",") + ",".join(points)
        first = False
    yield "]\n"


def api_routes() -> list[BaseRoute]:
    from viewer.stream import multi_stream_route, stream_route

    return [
        Route("/api/v1/feeds", list_feeds, methods=["GET"]),
        Route("/api/v1/feeds", create_feed_route, methods=["POST"]),
        Route("/api/v1/feeds/{feed}", feed_route, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/v1/feeds/{feed}/axes", axes_route, methods=["GET", "POST"]),
        Route("/api/v1/feeds/{feed}/axes/{axis}", axis_route, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/v1/feeds/{feed}/axes/{axis}/points", points_route, methods=["GET"]),
        Route("/api/v1/feeds/{feed}/points", batch_points, methods=["POST"]),
        Route("/api/v1/feeds/{feed}/export", export_route, methods=["GET"]),
        Route("/api/v1/feeds/{feed}/stream", stream_route, methods=["GET"]),
        Route("/api/v1/stream", multi_stream_route, methods=["GET"]),
    ]
