"""Reading and writing feeds, axes and points. Synchronous (Peewee): call it from a thread, never
from an event loop."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import peewee as pw

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
from rtdp.errors import Conflict, InvalidInput, NotFound
from rtdp.models import Axis, Feed, Point, User
from rtdp.topic import check_name

# SQLite allows 32,766 bound parameters per statement; rows have 4 columns.
INSERT_CHUNK = 5000
DELETE_CHUNK = 900
MAX_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class StoredPoint:
    id: int
    axis_id: int
    x: float
    y: float


def feed_casts(feed: Feed) -> Casts:
    return Casts(XCast(feed.x_cast), YCast(feed.y_cast))


def get_feed(name: str) -> Feed:
    feed = Feed.get_or_none(Feed.name == name)
    if feed is None:
        raise NotFound(f"no feed named {name[:64]!r}", feed=name[:64])
    return feed


def get_axis(feed: Feed, name: str) -> Axis:
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == name))
    if axis is None:
        raise NotFound(f"feed {feed.name!r} has no axis named {name[:64]!r}", feed=feed.name, axis=name[:64])
    return axis


def create_feed(
    name: str,
    owner: User | int,
    *,
    x_cast: str = "datetime",
    y_cast: str = "float",
    description: str = "",
    public: bool = False,
    retention_days: float | None = None,
    retention_points: int | None = None,
) -> Feed:
    check_name(name, "feed")
    try:
        casts = Casts(XCast(x_cast), YCast(y_cast))
    except ValueError:
        raise InvalidInput(
            f"unknown cast: x_cast must be one of {[c.value for c in XCast]}, "
            f"y_cast one of {[c.value for c in YCast]}"
        ) from None
    check_retention(retention_days, retention_points)
    if len(description) > 2000:
        raise InvalidInput("description is longer than 2000 characters", field="description")
    try:
        with Feed._meta.database.atomic():
            return Feed.create(
                name=name,
                owner=owner,
                x_cast=casts.x.value,
                y_cast=casts.y.value,
                description=description,
                public=public,
                retention_days=retention_days,
                retention_points=retention_points,
            )
    except pw.IntegrityError:
        raise Conflict(f"a feed named {name!r} already exists", field="name") from None


def check_retention(days: float | None, points: int | None) -> None:
    if days is not None and not 0 < days <= 36500:
        raise InvalidInput("retention days must be between 0 and 36500", field="retention_days")
    if points is not None and not 1 <= points <= 10**10:
        raise InvalidInput("retention points must be positive", field="retention_points")


def create_axis(feed: Feed, name: str) -> Axis:
    check_name(name, "axis")
    try:
        with Axis._meta.database.atomic():
            return Axis.create(feed=feed, name=name)
    except pw.IntegrityError:
        raise Conflict(f"feed {feed.name!r} already has an axis named {name!r}", field="name") from None


def ensure_axis(feed: Feed, name: str) -> Axis:
    """The axis, created if missing; safe when two writers race to create it."""
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == name))
    if axis is not None:
        return axis
    check_name(name, "axis")
    try:
        with Axis._meta.database.atomic():
            return Axis.create(feed=feed, name=name)
    except pw.IntegrityError:
        return get_axis(feed, name)


def ensure_feed(name: str, owner_id: int) -> Feed:
    feed = Feed.get_or_none(Feed.name == name)
    if feed is not None:
        return feed
    try:
        return create_feed(name, owner_id)
    except Conflict:
        return get_feed(name)


def write_points(batch: Sequence[tuple[int, Sample]], received_at: float | None = None) -> list[StoredPoint]:
    """Upsert `(axis_id, sample)` pairs in one transaction; a later point with the same axis and x
    replaces an earlier one and gets a new id. Returns the stored points in id order."""
    if not batch:
        return []
    received = time.time() if received_at is None else received_at
    # Within one batch the last sample for an (axis, x) wins.
    latest: dict[tuple[int, float], float] = {}
    for axis_id, sample in batch:
        key = (axis_id, sample.x)
        latest.pop(key, None)
        latest[key] = sample.y
    by_axis: dict[int, list[float]] = defaultdict(list)
    for axis_id, x in latest:
        by_axis[axis_id].append(x)
    db = Point._meta.database
    stored: list[StoredPoint] = []
    fields = [Point.axis, Point.x, Point.y, Point.received_at]
    replaced: dict[int, int] = defaultdict(int)
    with db.atomic():
        # Fast path: insert what is new in one statement; only conflicting rows take the slow path.
        rows = [(axis_id, x, y, received) for (axis_id, x), y in latest.items()]
        conflicts: list[tuple[int, float, float, float]] = []
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            cursor = (
                Point.insert_many(chunk, fields=fields)
                .on_conflict_ignore()
                .returning(Point.id, Point.axis, Point.x)
                .tuples()
                .execute()
            )
            inserted = {(a, x): i for i, a, x in cursor}
            for row in chunk:
                point_id = inserted.get((row[0], row[1]))
                if point_id is None:
                    conflicts.append(row)
                else:
                    stored.append(StoredPoint(point_id, row[0], row[1], row[2]))
        if conflicts:
            # Replace: delete then insert, so the replacement gets a new (higher) id for SSE replay.
            by_conflict: dict[int, list[float]] = defaultdict(list)
            for axis_id, x, _, _ in conflicts:
                by_conflict[axis_id].append(x)
            for axis_id, xs in by_conflict.items():
                for start in range(0, len(xs), DELETE_CHUNK):
                    chunk_x = xs[start : start + DELETE_CHUNK]
                    replaced[axis_id] += (
                        Point.delete().where((Point.axis == axis_id) & Point.x.in_(chunk_x)).execute()
                    )
            for start in range(0, len(conflicts), INSERT_CHUNK):
                chunk = conflicts[start : start + INSERT_CHUNK]
                cursor = Point.insert_many(chunk, fields=fields).returning(Point.id).tuples().execute()
                ids = [row[0] for row in cursor]
                stored.extend(StoredPoint(i, a, x, y) for i, (a, x, y, _) in zip(ids, chunk, strict=True))
        for axis_id, xs in by_axis.items():
            top = max(xs)
            Axis.update(
                last_seen=received, point_count=Axis.point_count + (len(xs) - replaced[axis_id])
            ).where(Axis.id == axis_id).execute()
            Axis.update(last_x=top, last_y=latest[(axis_id, top)]).where(
                (Axis.id == axis_id) & (Axis.last_x.is_null() | (Axis.last_x <= top))
            ).execute()
    stored.sort(key=lambda p: p.id)
    return stored


def query_points(
    axis: Axis,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    max_points: int | None = None,
    newest: bool = False,
) -> list[tuple[int, float, float]]:
    """(id, x, y) oldest first. `limit` keeps the newest `limit` when `newest`, else the oldest.
    `max_points` downsamples into buckets of equal x width, keeping each bucket's min and max."""
    query = Point.select(Point.id, Point.x, Point.y).where(Point.axis == axis.id)
    if since is not None:
        query = query.where(Point.x >= since)
    if until is not None:
        query = query.where(Point.x <= until)
    if max_points is not None:
        return _downsample(query, axis, since, until, max_points)
    limit = min(limit or MAX_LIMIT, MAX_LIMIT)
    if newest:
        rows = list(query.order_by(Point.x.desc()).limit(limit).tuples())
        rows.reverse()
        return rows
    return list(query.order_by(Point.x).limit(limit).tuples())


def _downsample(
    query: pw.ModelSelect, axis: Axis, since: float | None, until: float | None, max_points: int
) -> list[tuple[int, float, float]]:
    if max_points < 2:
        raise InvalidInput("max_points must be at least 2", field="max_points")
    bounds = Point.select(pw.fn.MIN(Point.x), pw.fn.MAX(Point.x), pw.fn.COUNT(Point.id)).where(
        Point.axis == axis.id
    )
    if since is not None:
        bounds = bounds.where(Point.x >= since)
    if until is not None:
        bounds = bounds.where(Point.x <= until)
    low, high, count = bounds.tuples().get()
    if not count:
        return []
    if count <= max_points:
        return list(query.order_by(Point.x).tuples())
    buckets = max(1, max_points // 2)
    width = (high - low) / buckets or 1.0
    chosen: dict[int, tuple[tuple[int, float, float], tuple[int, float, float]]] = {}
    for row in query.order_by(Point.x).tuples().iterator():
        bucket = min(int((row[1] - low) / width), buckets - 1)
        current = chosen.get(bucket)
        if current is None:
            chosen[bucket] = (row, row)
        else:
            lo, hi = current
            if row[2] < lo[2]:
                lo = row
            if row[2] > hi[2]:
                hi = row
            chosen[bucket] = (lo, hi)
    result: list[tuple[int, float, float]] = []
    for bucket in sorted(chosen):
        lo, hi = chosen[bucket]
        pair = sorted({lo, hi}, key=lambda r: r[1])
        result.extend(pair)
    return result


def points_after(feed: Feed, last_id: int, limit: int = 10_000) -> list[tuple[int, str, float, float]]:
    """(id, axis name, x, y) of a feed's points with id > last_id, in id order: SSE replay."""
    query = (
        Point.select(Point.id, Axis.name, Point.x, Point.y)
        .join(Axis)
        .where((Axis.feed == feed.id) & (Point.id > last_id))
        .order_by(Point.id)
        .limit(limit)
    )
    return list(query.tuples())


def iter_export(
    feed: Feed, axes: Sequence[Axis], since: float | None, until: float | None
) -> Iterator[tuple[str, float, float]]:
    """(axis name, x, y) ordered by axis then x, streamed without loading everything."""
    for axis in axes:
        query = Point.select(Point.x, Point.y).where(Point.axis == axis.id)
        if since is not None:
            query = query.where(Point.x >= since)
        if until is not None:
            query = query.where(Point.x <= until)
        for x, y in query.order_by(Point.x).tuples().iterator():
            yield axis.name, x, y
