"""`/admin`: the dashboard (admins only), and `/admin/stream`, its live JSON snapshot every 2 s over SSE.

Where the numbers come from:
- feeds and axes: Axis.point_count and last_seen (kept by the bridge), the feed's owner and retention;
- points per minute, now and per minute over the last hour: an in-memory sampler of every axis's
  point_count (one small query over the Axis table every SAMPLE_EVERY seconds, never a COUNT over
  Point). It starts with the first admin visit after the viewer started, so the hour chart fills in
  from then on; a purge lowering point_count reads as 0, not as a negative rate;
- rejections: the Rejection table (the bridge keeps its newest 10,000 rows);
- broker, bridge and SSE numbers: the app's Prometheus registry (viewer/metrics.py). In `rtdp serve` the
  broker's and bridge's collectors are registered there; in `rtdp viewer` run apart they are not, and
  those panels say "not in this process" (rates, lag, batch size, commit time, broker clients);
- database size: as the database's dialect measures it (rtdp.store.dialect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import peewee as pw
from prometheus_client.registry import CollectorRegistry
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtdp.errors import InvalidInput, PermissionDenied
from rtdp.models import Axis, Feed, Rejection, User
from rtdp.retention import recent_purges
from rtdp.store import dialect_of
from viewer.pages.render import Ctx, page_number
from viewer.session import session_user
from viewer.state import ViewerState, viewer_state

log = logging.getLogger(__name__)

PUSH_EVERY = 2.0
SAMPLE_EVERY = 5.0
HISTORY_MINUTES = 60
RECENT_REJECTIONS = 20
# What the retention purge removed lately (the PurgeLog table keeps its own bounded history).
RECENT_PURGES = 20

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class AxisRates:
    """Samples of every axis's point_count: the last ~70 s finely (the rate now) and one per minute for an
    hour (the chart). Written by the sampler thread, read by snapshots: each deque append is atomic."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, dict[int, int]]] = deque()
        self.minutes: deque[tuple[float, dict[int, int]]] = deque(maxlen=HISTORY_MINUTES + 2)

    def add(self, now: float, counts: dict[int, int]) -> None:
        self.recent.append((now, counts))
        while self.recent and now - self.recent[0][0] > 70:
            self.recent.popleft()
        if not self.minutes or int(now // 60) != int(self.minutes[-1][0] // 60):
            self.minutes.append((now, counts))

    def per_minute(self, axis_id: int, current: int, now: float) -> float | None:
        """New points per minute over (about) the last minute; None before two samples a second apart."""
        for then, counts in list(self.recent):
            if now - then <= 61 and now - then >= 1 and axis_id in counts:
                return max(0, current - counts[axis_id]) * 60.0 / (now - then)
        return None

    def history(self, axis_id: int) -> list[float | None]:
        """Points per minute for each of the last HISTORY_MINUTES minutes, oldest first (None: no data)."""
        marks = list(self.minutes)
        values: list[float | None] = []
        for (t0, c0), (t1, c1) in zip(marks, marks[1:], strict=False):
            if axis_id in c0 and axis_id in c1 and t1 > t0:
                values.append(round(max(0, c1[axis_id] - c0[axis_id]) * 60.0 / (t1 - t0), 2))
            else:
                values.append(None)
        values = values[-HISTORY_MINUTES:]
        return [None] * (HISTORY_MINUTES - len(values)) + values


def axis_counts() -> dict[int, int]:
    """Every axis's point_count: one row per axis (the bridge keeps it up to date)."""
    rows: list[Any] = list(Axis.select(Axis.id, Axis.point_count).tuples())
    return {int(axis_id): int(count) for axis_id, count in rows}


@dataclass
class Sampler:
    """A daemon thread sampling point counts every SAMPLE_EVERY seconds until the viewer shuts down."""

    state: ViewerState
    rates: AxisRates = field(default_factory=AxisRates)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="rtdp-admin-sampler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        try:
            while not self.state.hub.closed:
                try:
                    self.rates.add(time.time(), axis_counts())
                except pw.PeeweeException as exc:
                    log.warning("admin: could not sample point counts: %s", exc)
                stop.wait(SAMPLE_EVERY)
        finally:
            try:
                self.state.db.close()
            except Exception:  # noqa: BLE001 -- this thread's connection; nothing to do if closing fails
                pass


_sampler_lock = threading.Lock()


def sampler_for(request: Request) -> Sampler:
    """The app's sampler, started on first use."""
    with _sampler_lock:
        sampler: Sampler | None = getattr(request.app.state, "admin_sampler", None)
        if sampler is None or sampler.state is not viewer_state(request):
            sampler = Sampler(viewer_state(request))
            sampler.rates.add(time.time(), axis_counts())
            sampler.start()
            request.app.state.admin_sampler = sampler
        return sampler


def read_registry(registry: CollectorRegistry) -> Samples:
    """Every sample of the app's registry in one pass (its collectors are read once)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for metric in registry.collect()
        for sample in metric.samples
    }


def _total(samples: Samples, name: str) -> float | None:
    values = [value for (sample, _), value in samples.items() if sample == name]
    return sum(values) if values else None


def _rate(now: Samples, before: Samples | None, seconds: float, name: str) -> float | None:
    a, b = _total(now, name), _total(before, name) if before is not None else None
    if a is None or b is None or seconds <= 0:
        return None
    return round(max(0.0, a - b) / seconds, 2)


def _mean(now: Samples, before: Samples | None, name: str) -> float | None:
    """Mean of a summary/histogram over the interval (or since start without a previous sample)."""
    total, count = _total(now, name + "_sum"), _total(now, name + "_count")
    if total is None or count is None:
        return None
    if before is not None:
        total -= _total(before, name + "_sum") or 0.0
        count -= _total(before, name + "_count") or 0.0
    return round(total / count, 6) if count > 0 else None


def system_numbers(samples: Samples, before: Samples | None, seconds: float) -> dict[str, Any]:
    commit = _mean(samples, before, "rtdp_bridge_commit_seconds")
    return {
        "broker_clients": _total(samples, "rtdp_broker_clients_connected"),
        "messages_in_per_s": _rate(samples, before, seconds, "rtdp_broker_messages_in_total"),
        "messages_out_per_s": _rate(samples, before, seconds, "rtdp_broker_messages_out_total"),
        "auth_failures": _total(samples, "rtdp_broker_auth_failures_total"),
        "refused_publishes": _total(samples, "rtdp_broker_refused_publishes_total"),
        "points_per_s": _rate(samples, before, seconds, "rtdp_bridge_points_total"),
        "batch_points": _mean(samples, before, "rtdp_bridge_batch_points"),
        "commit_ms": round(commit * 1000, 3) if commit is not None else None,
        "bridge_lag_s": _total(samples, "rtdp_bridge_lag_seconds"),
        "bridge_queued": _total(samples, "rtdp_bridge_queued_messages"),
        "bridge_rejected": _total(samples, "rtdp_bridge_rejected_messages_total"),
        "sse_clients": _total(samples, "rtdp_sse_clients"),
        "http_pending": _total(samples, "rtdp_http_pending_publishes"),
    }


@dataclass(frozen=True)
class Page:
    """Which rows of the feeds table a snapshot holds: `size` (feed, axis) rows from row (number-1)*size."""

    number: int = 1
    size: int = 100


def feed_rows(rates: AxisRates, now: float, page: Page) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """A page of feeds with their axes, the newest rejections, and whether more rows follow. Runs in a
    database thread. Paged by (feed, axis) row: thousands of axes must not make every push megabytes."""
    grouped: list[Any] = list(
        Rejection.select(Rejection.feed, Rejection.axis, pw.fn.COUNT(Rejection.id))
        .group_by(Rejection.feed, Rejection.axis)
        .tuples()
    )
    rejected = {(feed, axis): int(count) for feed, axis, count in grouped}
    query: Any = (
        Feed.select(
            Feed.name, User.email, Feed.public, Feed.retention_days, Feed.retention_points,
            Axis.id, Axis.name, Axis.point_count, Axis.last_seen,
        )
        .join(User)
        .switch(Feed)
        .join(Axis, pw.JOIN.LEFT_OUTER)
        .order_by(Feed.name, Axis.name)
        .offset((page.number - 1) * page.size)
        .limit(page.size + 1)
        .tuples()
    )
    found = list(query)
    more = len(found) > page.size
    feeds: list[dict[str, Any]] = []
    for name, owner, public, days, points, axis_id, axis_name, count, last_seen in found[: page.size]:
        if not feeds or feeds[-1]["feed"] != name:
            feeds.append({
                "feed": name,
                "owner": owner,
                "public": bool(public),
                "retention_days": days,
                "retention_points": points,
                "rejected": 0,
                "axes": [],
            })
        if axis_id is not None:
            feeds[-1]["axes"].append({
                "axis": axis_name,
                "points": int(count),
                "per_minute": rates.per_minute(axis_id, int(count), now),
                "history": rates.history(axis_id),
                "last_seen": last_seen,
                "rejected": rejected.pop((name, axis_name), 0),
            })
    # A feed's own count is for rejections on axes that do not exist (not those on its other pages).
    names = {feed["feed"] for feed in feeds}
    left = [(f, a) for f, a in rejected if f in names]
    existing: set[tuple[str, str]] = set()
    if left:
        found_axes: Any = (
            Axis.select(Feed.name, Axis.name)
            .join(Feed)
            .where(Feed.name.in_(list(names)) & Axis.name.in_(sorted({a for _, a in left})))
            .tuples()
        )
        existing = {(f, a) for f, a in found_axes}
    for feed in feeds:
        feed["rejected"] = sum(
            rejected[key] for key in left if key[0] == feed["feed"] and key not in existing
        )
    recent = [
        {"feed": r.feed, "axis": r.axis, "reason": r.reason, "at": r.at}
        for r in Rejection.select().order_by(Rejection.id.desc()).limit(RECENT_REJECTIONS)
    ]
    return feeds, recent, more


def snapshot(
    state: ViewerState, rates: AxisRates, before: tuple[float, Samples] | None, page: Page = Page()
) -> tuple[dict[str, Any], Samples]:
    """The dashboard's JSON; `before` (time, registry samples) of the previous snapshot gives per-second rates.
    Runs in a database thread."""
    now = time.time()
    samples = read_registry(state.metrics.registry)
    previous, seconds = (before[1], now - before[0]) if before is not None else (None, 0.0)
    feeds, recent, more = feed_rows(rates, now, page)
    try:
        size = dialect_of(state.db).size(state.db)
    except (pw.PeeweeException, OSError):
        size = None
    system = system_numbers(samples, previous, seconds)
    system["database_bytes"] = size
    system["in_process"] = {
        "broker": _total(samples, "rtdp_broker_clients_connected") is not None,
        "bridge": _total(samples, "rtdp_bridge_points_total") is not None,
    }
    purges = [
        {"feed": row.feed, "axis": row.axis, "removed": row.removed, "at": row.at}
        for row in recent_purges(RECENT_PURGES)
    ]
    data = {"at": now, "system": system, "feeds": feeds, "rejections": recent, "purges": purges}
    return {**data, "page": page.number, "more": more}, samples


def _require_admin(user: User | None) -> User:
    if user is None or not user.is_admin:
        raise PermissionDenied("the dashboard is for administrators")
    return user


def admin_page(ctx: Ctx) -> Response:
    """GET /admin: the dashboard, rendered with a first snapshot; admin.js keeps it live."""
    _require_admin(ctx.require_user())
    state = viewer_state(ctx.request)
    sampler = sampler_for(ctx.request)
    page = Page(page_number(ctx.request), state.settings.page_size)
    data, _ = snapshot(state, sampler.rates, None, page)
    stream = f"/admin/stream?page={page.number}"
    config = json.dumps({"stream": stream, "snapshot": data}).replace("<", "\\u003c")
    return ctx.render("admin.html", data=data, config=config, history_minutes=HISTORY_MINUTES)


async def _snapshots(state: ViewerState, rates: AxisRates, page: Page) -> AsyncIterator[ServerSentEvent]:
    before: tuple[float, Samples] | None = None
    while not state.hub.closed:
        data, samples = await state.run_db(snapshot, state, rates, before, page)
        before = (data["at"], samples)
        yield ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event="snapshot")
        await asyncio.sleep(PUSH_EVERY)


async def admin_stream(request: Request) -> Response:
    """GET /admin/stream: event `snapshot` with the dashboard's JSON every PUSH_EVERY seconds (admins only)."""
    state = viewer_state(request)
    user = await state.run_db(session_user, request)
    if user is None:
        return JSONResponse({"error": "sign in to see the dashboard", "code": "login_required"}, status_code=401)
    if not user.is_admin:
        return JSONResponse({"error": "the dashboard is for administrators", "code": "permission_denied"}, 403)
    try:
        page = Page(page_number(request), state.settings.page_size)
    except InvalidInput as exc:
        return JSONResponse(exc.as_dict(), status_code=exc.status)
    sampler = await state.run_db(sampler_for, request)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    response: Response = EventSourceResponse(
        _snapshots(state, sampler.rates, page), ping=state.settings.sse_heartbeat, headers=headers
    )
    return response
