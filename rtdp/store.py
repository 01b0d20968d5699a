"""Reading and writing feeds, axes and points. Synchronous (Peewee): call it from a thread, never
from an event loop."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import peewee as pw

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
from rtdp.errors import Conflict, InvalidInput, NotFound
from rtdp.models import Axis, Feed, Point, User
from rtdp.topic import check_name

# SQLite allows 32,766 bound parameters per statement; rows have 4 columns.
INSERT_CHUNK = 5000
DELETE_CHUNK = 2000
REPLACE_ATTEMPTS = 5
MAX_LIMIT = 100_000


class StoredPoint(NamedTuple):
    """A committed point. A NamedTuple, not a dataclass: one is built per stored row, and a frozen
    dataclass cost as much per point as all of the decoding (measured in the bridge's profile)."""

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
    replaces an earlier one and gets a new id. Returns the stored points in id order.

    Runs hand-written, parameterised SQL through Peewee's `execute_sql`: building an `insert_many`
    query costs more Python time than SQLite spends storing the rows (see bench/store_bench.py).
    """
    if not batch:
        return []
    received = time.time() if received_at is None else received_at
    # Within one batch the last sample for an (axis, x) wins.
    latest: dict[tuple[int, float], float] = {}
    for axis_id, sample in batch:
        key = (axis_id, sample.x)
        if key in latest:
            del latest[key]
        latest[key] = sample.y
    db = Point._meta.database
    stored: list[StoredPoint] = []
    rows = [(axis_id, x, y) for (axis_id, x), y in latest.items()]
    with db.atomic():
        if not _is_sqlite(db):
            # PostgreSQL: writers of the same axes (bridges of a share group) take turns, in axis id
            # order so they cannot deadlock; otherwise two replacing the same points keep undoing each
            # other. NO KEY: inserts elsewhere (their foreign-key checks) are not blocked. SQLite needs
            # none of this: its first write below takes the database's only write lock.
            axis_ids = sorted({axis_id for axis_id, _, _ in rows})
            lock = Axis.select(Axis.id).where(Axis.id.in_(axis_ids)).order_by(Axis.id)
            list(lock.for_update("FOR NO KEY UPDATE"))  # type: ignore[arg-type]  # peewee takes the clause
        # Insert what is new; a row that collides on (axis, x) is skipped here and replaced below.
        for start in range(0, len(rows), INSERT_CHUNK):
            stored.extend(_insert_points(db, rows[start : start + INSERT_CHUNK], received, ignore=True))
        pending: list[tuple[int, float, float]] = []
        if len(stored) < len(rows):
            inserted = {(p.axis_id, p.x) for p in stored}
            pending = [row for row in rows if (row[0], row[1]) not in inserted]
        # Replace: delete then insert, so the replacement gets a new (higher) id for SSE replay.
        # Repeated because on PostgreSQL a concurrent writer (another bridge of a share group) may
        # insert the same (axis, x) between our delete and insert; SQLite holds its lock throughout.
        replaced: dict[int, int] = defaultdict(int)
        for _ in range(REPLACE_ATTEMPTS):
            if not pending:
                break
            for start in range(0, len(pending), DELETE_CHUNK):
                chunk = pending[start : start + DELETE_CHUNK]
                for axis_id, count in _delete_points(db, [(a, x) for a, x, _ in chunk]).items():
                    replaced[axis_id] += count
            done: list[StoredPoint] = []
            for start in range(0, len(pending), INSERT_CHUNK):
                done.extend(_insert_points(db, pending[start : start + INSERT_CHUNK], received, ignore=True))
            stored.extend(done)
            written = {(p.axis_id, p.x) for p in done}
            pending = [row for row in pending if (row[0], row[1]) not in written]
        if pending:
            raise Conflict("points kept being replaced by a concurrent writer; retry the batch")
        # Per axis: the newest (x, y) of the batch and how many distinct x it brought.
        newest: dict[int, tuple[float, float, int]] = {}
        for axis_id, x, y in rows:
            seen = newest.get(axis_id)
            if seen is None:
                newest[axis_id] = (x, y, 1)
            else:
                newest[axis_id] = (x, y, seen[2] + 1) if x > seen[0] else (seen[0], seen[1], seen[2] + 1)
        for axis_id, (top_x, top_y, count) in newest.items():
            Axis.update(last_seen=received, point_count=Axis.point_count + (count - replaced[axis_id])).where(
                Axis.id == axis_id
            ).execute()
            Axis.update(last_x=top_x, last_y=top_y).where(
                (Axis.id == axis_id) & (Axis.last_x.is_null() | (Axis.last_x <= top_x))
            ).execute()
    stored.sort(key=lambda p: p.id)
    return stored


def _is_sqlite(db: pw.Database) -> bool:
    return isinstance(db.obj if isinstance(db, pw.DatabaseProxy) else db, pw.SqliteDatabase)


def _execute(db: pw.Database, sql: str, params: Sequence[object]) -> Any:
    """A parameterised statement through Peewee (its connection, transaction and error types)."""
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def _insert_points(
    db: pw.Database, rows: Sequence[tuple[int, float, float]], received: float, *, ignore: bool
) -> list[StoredPoint]:
    params: list[object] = []
    for axis_id, x, y in rows:
        params += (axis_id, x, y, received)
    cursor = _execute(db, _insert_sql(db.param, len(rows), ignore), params)
    # float(): SQLite hands back integral REALs as ints.
    return [StoredPoint(i, a, float(x), float(y)) for i, a, x, y in cursor.fetchall()]


def _delete_points(db: pw.Database, keys: Sequence[tuple[int, float]]) -> dict[int, int]:
    """Delete the points with these (axis, x); returns how many each axis lost."""
    params: list[object] = []
    for axis_id, x in keys:
        params += (axis_id, x)
    counts: dict[int, int] = defaultdict(int)
    for (axis_id,) in _execute(db, _delete_sql(db.param, len(keys)), params).fetchall():
        counts[axis_id] += 1
    return counts


# The SQL text depends only on the placeholder style and the row count; values are always bound
# parameters. Names come from the model (plain lower-case identifiers, so no quoting is needed).
_TABLE = Point._meta.table_name
_AXIS, _X, _Y, _RECEIVED, _ID = (f.column_name for f in (Point.axis, Point.x, Point.y, Point.received_at, Point.id))


@functools.lru_cache(maxsize=64)
def _insert_sql(param: str, rows: int, ignore: bool) -> str:
    values = ",".join([f"({param},{param},{param},{param})"] * rows)
    conflict = f" ON CONFLICT ({_AXIS}, {_X}) DO NOTHING" if ignore else ""
    return (
        f"INSERT INTO {_TABLE} ({_AXIS}, {_X}, {_Y}, {_RECEIVED}) VALUES {values}{conflict}"
        f" RETURNING {_ID}, {_AXIS}, {_X}, {_Y}"
    )


@functools.lru_cache(maxsize=64)
def _delete_sql(param: str, rows: int) -> str:
    pairs = ",".join([f"({param},{param})"] * rows)
    return f"DELETE FROM {_TABLE} WHERE ({_AXIS}, {_X}) IN (VALUES {pairs}) RETURNING {_AXIS}"


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
    # Any: Peewee's stubs type .tuples() rows as models.
    query: Any = Point.select(Point.id, Point.x, Point.y).where(Point.axis == axis.id)
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
    query: Any, axis: Axis, since: float | None, until: float | None, max_points: int
) -> list[tuple[int, float, float]]:
    """At most `max_points` points: the x range cut into max_points // 2 buckets of equal width,
    each giving its lowest and highest point (so a single spike survives), oldest first."""
    if max_points < 2:
        raise InvalidInput("max_points must be at least 2", field="max_points")
    max_points = min(max_points, MAX_LIMIT)  # bounds memory like `limit` does
    # Reading max_points + 1 rows is cheaper than COUNT(*) over a large range and answers small ones.
    head: list[tuple[int, float, float]] = [
        (i, float(x), float(y)) for i, x, y in query.order_by(Point.x).limit(max_points + 1).tuples()
    ]
    if len(head) <= max_points:
        return head
    low = head[0][1]
    high = float(query.order_by(Point.x.desc()).limit(1).tuples().get()[1])
    buckets = max_points // 2
    # x is unique per axis and there are more points than max_points, so high > low.
    width = (high - low) / buckets
    edges = [low + i * width for i in range(buckets)] + [high]
    db = Point._meta.database
    if _is_sqlite(db):
        rows = _extremes_by_range(db, axis.id, edges)
    else:
        rows = _extremes_by_window(db, axis.id, edges)
    return rows


_RANGE_EXTREMES = (
    f"SELECT {_ID}, {_X}, {_Y}, MIN({_Y}), MAX({_Y}) FROM {_TABLE} WHERE {_AXIS} = ? AND {_X} >= ? AND {_X} {{}} ?"
)
_RANGE_FIND = (
    f"SELECT {_ID}, {_X}, {_Y} FROM {_TABLE} WHERE {_AXIS} = ? AND {_X} >= ? AND {_X} {{}} ? AND {_Y} = ? LIMIT 1"
)


def _extremes_by_range(db: pw.Database, axis_id: int, edges: list[float]) -> list[tuple[int, float, float]]:
    """SQLite: one aggregate per bucket over its x range of the (axis, x, y) index.

    A GROUP BY on the bucket number sorts every row in a temporary B-tree (about 3x slower over a
    million points); ranges read the index in order and sort nothing. With MIN() and MAX() together
    SQLite takes the bare columns from the row of one of them; the other row is looked up.
    """
    result: list[tuple[int, float, float]] = []
    last = len(edges) - 2
    cursor = db.cursor()  # type: ignore[no-untyped-call]
    for i in range(last + 1):
        # Half-open buckets; the last one is closed so the newest point belongs to it.
        op = "<=" if i == last else "<"
        params = (axis_id, edges[i], edges[i + 1])
        row = cursor.execute(_RANGE_EXTREMES.format(op), params).fetchone()
        if row is None or row[3] is None:
            continue  # empty bucket
        point_id, x, y, low, high = row
        found = (int(point_id), float(x), float(y))
        if low == high:
            result.append(found)
            continue
        other = high if y == low else low
        match = cursor.execute(_RANGE_FIND.format(op), (*params, other)).fetchone()
        pair = [found, (int(match[0]), float(match[1]), float(match[2]))]
        pair.sort(key=lambda r: r[1])
        result.extend(pair)
    return result


def _extremes_by_window(db: pw.Database, axis_id: int, edges: list[float]) -> list[tuple[int, float, float]]:
    """PostgreSQL: one statement ranking each bucket's rows by y both ways."""
    p = db.param
    low, high, buckets = edges[0], edges[-1], len(edges) - 1
    width = (high - low) / buckets
    sql = (
        f"WITH t AS (SELECT {_ID} AS id, {_X} AS x, {_Y} AS y,"
        f" LEAST(FLOOR(({_X} - {p}) / {p}), {p}) AS b FROM {_TABLE}"
        f" WHERE {_AXIS} = {p} AND {_X} >= {p} AND {_X} <= {p}),"
        " r AS (SELECT id, x, y, ROW_NUMBER() OVER (PARTITION BY b ORDER BY y, x) AS rank_low,"
        " ROW_NUMBER() OVER (PARTITION BY b ORDER BY y DESC, x) AS rank_high FROM t)"
        " SELECT id, x, y FROM r WHERE rank_low = 1 OR rank_high = 1 ORDER BY x"
    )
    cursor = _execute(db, sql, (low, width, buckets - 1, axis_id, low, high))
    return [(int(i), float(x), float(y)) for i, x, y in cursor.fetchall()]


def points_after(feed: Feed, last_id: int, limit: int = 10_000) -> list[tuple[int, str, float, float]]:
    """(id, axis name, x, y) of a feed's points with id > last_id, in id order: SSE replay."""
    query: Any = (
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
        query: Any = Point.select(Point.x, Point.y).where(Point.axis == axis.id)
        if since is not None:
            query = query.where(Point.x >= since)
        if until is not None:
            query = query.where(Point.x <= until)
        for x, y in query.order_by(Point.x).tuples().iterator():
            yield axis.name, x, y
