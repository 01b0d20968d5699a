"""Reading and writing feeds, axes and points. Synchronous (Peewee): call it from a thread, never
from an event loop."""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import peewee as pw

from rtdp import summary
from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
from rtdp.errors import AxisQuotaExceeded, Conflict, InvalidInput, NotFound
from rtdp.models import Axis, Feed, Point, User
from rtdp.topic import check_name

# SQLite allows 32,766 bound parameters per statement; rows have 4 columns.
INSERT_CHUNK = 5000
DELETE_CHUNK = 2000
REPLACE_ATTEMPTS = 5
MAX_LIMIT = 100_000
# PostgreSQL advisory lock namespace (any constant) for writers of a feed's points.
_PG_WRITE_LOCK = 0x72747077


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
        raise InvalidInput("retention points must be between 1 and 10000000000", field="retention_points")


def check_axis_quota(feed: Feed, quota: int) -> None:
    """Raise AxisQuotaExceeded if `feed` may not get one more axis: it has `quota` already (0: no limit)."""
    if quota <= 0:
        return
    count = Axis.select(Axis.id).where(Axis.feed == feed.id).count()
    if count >= quota:
        raise AxisQuotaExceeded(
            f"axis quota reached: feed {feed.name!r} has {count} axes and may have {quota}; delete an axis first",
            quota=quota,
        )


def create_axis(feed: Feed, name: str, *, quota: int = 0) -> Axis:
    """A new axis; `quota` is the most axes the feed may have (0: no limit, as for `rtdp axis add`)."""
    check_name(name, "axis")
    check_axis_quota(feed, quota)
    try:
        with Axis._meta.database.atomic():
            return Axis.create(feed=feed, name=name)
    except pw.IntegrityError:
        raise Conflict(f"feed {feed.name!r} already has an axis named {name!r}", field="name") from None


def ensure_axis(feed: Feed, name: str, *, quota: int = 0) -> Axis:
    """The axis, created if missing (within `quota` axes per feed, 0: no limit); safe when two writers
    race to create it."""
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == name))
    if axis is not None:
        return axis
    check_name(name, "axis")
    check_axis_quota(feed, quota)
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
    # Within one batch the last sample for an (axis, x) wins (at the place of the first).
    latest = {(axis_id, sample.x): sample.y for axis_id, sample in batch}
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
            # First the feeds: ids come from one sequence as rows are inserted, so without this a
            # writer could commit a feed's point with id 100 after another committed id 101 there,
            # and an SSE client resuming from Last-Event-ID 101 would never get 100. Feed by feed,
            # writers now commit in the order they take ids. Advisory (not row) locks: nothing else
            # that touches the feed rows waits for them.
            # Hand-written, one statement each: with a message per batch, building these with Peewee
            # and a round trip per feed cost a fifth of the time.
            ids = _pg_ints(axis_ids)
            _execute(db, _PG_LOCK_FEEDS, (_PG_WRITE_LOCK, ids)).fetchall()
            _execute(db, _PG_LOCK_AXES, (ids,)).fetchall()
        # Insert what is new; a row that collides on (axis, x) is skipped here and replaced below.
        for start in range(0, len(rows), INSERT_CHUNK):
            stored.extend(_insert_points(db, rows[start : start + INSERT_CHUNK], received))
        pending: list[tuple[int, float, float]] = []
        if len(stored) < len(rows):
            inserted = {(p.axis_id, p.x) for p in stored}
            pending = [row for row in rows if (row[0], row[1]) not in inserted]
        # Where points were replaced, the summaries' extremes may have gone with the old rows.
        replaced_xs: dict[int, list[float]] = defaultdict(list)
        for axis_id, x, _ in pending:
            replaced_xs[axis_id].append(x)
        # Replace with a new (higher) id for SSE replay: SQLite deletes then inserts; PostgreSQL
        # updates the rows, id included (half the server's time of a delete and an insert). Repeated
        # because on PostgreSQL a concurrent writer may delete or insert the same (axis, x) in between
        # (the purge, another bridge of a share group); SQLite holds its lock throughout.
        replaced: dict[int, int] = defaultdict(int)
        sqlite = _is_sqlite(db)
        for _ in range(REPLACE_ATTEMPTS):
            if not pending:
                break
            done: list[StoredPoint] = []
            absent = pending
            if sqlite:
                for start in range(0, len(pending), DELETE_CHUNK):
                    chunk = pending[start : start + DELETE_CHUNK]
                    for axis_id, count in _delete_points(db, [(a, x) for a, x, _ in chunk]).items():
                        replaced[axis_id] += count
            else:
                for start in range(0, len(pending), INSERT_CHUNK):
                    done.extend(_update_points(db, pending[start : start + INSERT_CHUNK], received))
                for point in done:
                    replaced[point.axis_id] += 1
                updated = {(p.axis_id, p.x) for p in done}
                absent = [row for row in pending if (row[0], row[1]) not in updated]
            for start in range(0, len(absent), INSERT_CHUNK):
                done.extend(_insert_points(db, absent[start : start + INSERT_CHUNK], received))
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
        levels: dict[int, tuple[int, int | None]] = {}
        for axis_id, (top_x, top_y, count) in newest.items():
            params = (received, count - replaced[axis_id], top_x, top_y, top_x, top_x, axis_id)
            total, level = _execute(db, _count_sql(db.param), params).fetchone()
            levels[axis_id] = (int(total), level)
        stored.sort()  # by id: a StoredPoint is a tuple that starts with it
        _summarise(db, stored, levels, replaced_xs)
    return stored


def _summarise(
    db: pw.Database,
    stored: list[StoredPoint],
    levels: dict[int, tuple[int, int | None]],
    replaced_xs: dict[int, list[float]],
) -> None:
    """Keep each axis's per-block summaries (rtdp.summary) exact after a write."""
    if len(levels) == 1:
        by_axis = {next(iter(levels)): stored}
    else:
        by_axis = defaultdict(list)
        for point in stored:
            by_axis[point.axis_id].append(point)
    for axis_id, (total, level) in levels.items():
        if level is None:
            if total >= summary.PLAN_AT:
                summary.plan(db, axis_id, total)  # built from the points, this batch's included
            continue
        if not summary.kept(level):
            continue
        try:
            summary.fold(db, axis_id, level, by_axis.get(axis_id, []))
            summary.refresh(db, axis_id, level, replaced_xs.get(axis_id, ()))
        except summary.OutOfRange:
            summary.turn_off(axis_id)


def _is_sqlite(db: pw.Database) -> bool:
    return isinstance(db.obj if isinstance(db, pw.DatabaseProxy) else db, pw.SqliteDatabase)


def _execute(db: pw.Database, sql: str, params: Sequence[object]) -> Any:
    """A parameterised statement through Peewee (its connection, transaction and error types)."""
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def _insert_points(db: pw.Database, rows: Sequence[tuple[int, float, float]], received: float) -> list[StoredPoint]:
    """Insert the rows whose (axis, x) is free; returns those stored."""
    if _is_sqlite(db):
        params: list[object] = []
        for axis_id, x, y in rows:
            params += (axis_id, x, y, received)
        cursor = _execute(db, _insert_sql(db.param, len(rows)), params)
    else:
        axes, xs, ys = zip(*rows, strict=True)
        cursor = _execute(db, _PG_INSERT, (received, _pg_ints(axes), _pg_floats(xs), _pg_floats(ys)))
    return list(map(StoredPoint._make, cursor.fetchall()))


def _update_points(db: pw.Database, rows: Sequence[tuple[int, float, float]], received: float) -> list[StoredPoint]:
    """PostgreSQL: give the stored points with these (axis, x) their new y and a new id; returns those
    updated (a point deleted meanwhile is not)."""
    axes, xs, ys = zip(*rows, strict=True)
    cursor = _execute(db, _PG_UPDATE, (received, _pg_ints(axes), _pg_floats(xs), _pg_floats(ys)))
    return list(map(StoredPoint._make, cursor.fetchall()))


def _delete_points(db: pw.Database, keys: Sequence[tuple[int, float]]) -> dict[int, int]:
    """SQLite: delete the points with these (axis, x); returns how many each axis lost."""
    params: list[object] = []
    for axis_id, x in keys:
        params += (axis_id, x)
    counts: dict[int, int] = defaultdict(int)
    for (axis_id,) in _execute(db, _delete_sql(db.param, len(keys)), params).fetchall():
        counts[axis_id] += 1
    return counts


def _pg_floats(values: Iterable[float]) -> str:
    """A PostgreSQL array literal of floats, bound as one text parameter and cast in the statement.

    psycopg2 interpolates every parameter into the SQL text in Python, and the server then parses a
    VALUES list of thousands of expressions: a batch's rows as a few arrays for unnest() are stored
    about twice as fast (bench/store_bench.py). float's repr is exact (the shortest string that reads
    back as the same double, as psycopg2 sends a float parameter); float() first, so an int or a float
    subclass (numpy's repr differs) prints the same way.
    """
    return "{" + ",".join(map(float.__repr__, map(float, values))) + "}"


def _pg_ints(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (see _pg_floats)."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


# The SQL text depends only on the placeholder style and the row count; values are always bound
# parameters. Names come from the model (plain lower-case identifiers, so no quoting is needed).
_TABLE = Point._meta.table_name
_AXIS, _X, _Y, _RECEIVED, _ID = (f.column_name for f in (Point.axis, Point.x, Point.y, Point.received_at, Point.id))
_AXIS_TABLE = Axis._meta.table_name
_AXIS_ID, _AXIS_FEED, _LAST_SEEN, _COUNT, _LEVEL, _LAST_X, _LAST_Y = (
    f.column_name
    for f in (Axis.id, Axis.feed, Axis.last_seen, Axis.point_count, Axis.summary_level, Axis.last_x, Axis.last_y)
)


@functools.lru_cache(maxsize=64)
def _insert_sql(param: str, rows: int) -> str:
    values = ",".join([f"({param},{param},{param},{param})"] * rows)
    return (
        f"INSERT INTO {_TABLE} ({_AXIS}, {_X}, {_Y}, {_RECEIVED}) VALUES {values}"
        f" ON CONFLICT ({_AXIS}, {_X}) DO NOTHING"
        # + 0.0: SQLite's RETURNING hands back integral REALs as ints; this way they come as floats
        # and each row can become a StoredPoint as it is.
        f" RETURNING {_ID}, {_AXIS}, {_X} + 0.0, {_Y} + 0.0"
    )


# PostgreSQL: the rows as one array per column. A function scan returns unnest()'s rows in array
# order, so ids are still taken in the order of the batch, as from a VALUES list.
_PG_INSERT = (
    f"INSERT INTO {_TABLE} ({_AXIS}, {_X}, {_Y}, {_RECEIVED})"
    " SELECT axis, x, y, %s::float8 FROM unnest(%s::int8[], %s::float8[], %s::float8[]) AS new(axis, x, y)"
    f" ON CONFLICT ({_AXIS}, {_X}) DO NOTHING RETURNING {_ID}, {_AXIS}, {_X}, {_Y}"
)
# DEFAULT: the next id from the sequence. The planner probes the (axis, x) index once per row
# (checked with EXPLAIN on 2,000,000 points).
_PG_UPDATE = (
    f"UPDATE {_TABLE} SET {_ID} = DEFAULT, {_Y} = new.y, {_RECEIVED} = %s"
    " FROM unnest(%s::int8[], %s::float8[], %s::float8[]) AS new(axis, x, y)"
    f" WHERE {_TABLE}.{_AXIS} = new.axis AND {_TABLE}.{_X} = new.x"
    f" RETURNING {_TABLE}.{_ID}, {_TABLE}.{_AXIS}, {_TABLE}.{_X}, {_TABLE}.{_Y}"
)


# Locks, in the order every writer takes them (see write_points). The feeds' locks are taken as the
# rows come out of the sorted subquery.
_PG_LOCK_FEEDS = (
    f"SELECT pg_advisory_xact_lock(%s, feed) FROM (SELECT DISTINCT {_AXIS_FEED} AS feed FROM {_AXIS_TABLE}"
    f" WHERE {_AXIS_ID} = ANY(%s::int8[]) ORDER BY feed) AS feeds"
)
_PG_LOCK_AXES = (
    f"SELECT {_AXIS_ID} FROM {_AXIS_TABLE} WHERE {_AXIS_ID} = ANY(%s::int8[]) ORDER BY {_AXIS_ID} FOR NO KEY UPDATE"
)


@functools.lru_cache(maxsize=4)
def _count_sql(param: str) -> str:
    """An axis after a write: when it was seen, how many points it has, and its newest (x, y) unless
    it already had a later x."""
    newer = f"{_LAST_X} IS NULL OR {_LAST_X} <= {param}"
    return (
        f"UPDATE {_AXIS_TABLE} SET {_LAST_SEEN} = {param}, {_COUNT} = {_COUNT} + {param},"
        f" {_LAST_Y} = CASE WHEN {newer} THEN {param} ELSE {_LAST_Y} END,"
        f" {_LAST_X} = CASE WHEN {newer} THEN {param} ELSE {_LAST_X} END"
        f" WHERE {_AXIS_ID} = {param} RETURNING {_COUNT}, {_LEVEL}"
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


class Buckets(NamedTuple):
    """How downsampling cuts an x range: buckets of `group` blocks of `level` (16**level wide, as in
    rtdp.summary), aligned to multiples of their width. Aligned, a bucket is a union of summary
    blocks, so it can be answered from the summary rows instead of the points."""

    level: int
    group: int

    @property
    def block_width(self) -> float:
        return summary.width(self.level)

    def bucket_of(self, x: float) -> int:
        return math.floor(x / self.block_width) // self.group

    def bounds(self, bucket: int) -> tuple[float, float]:
        first = bucket * self.group
        return first * self.block_width, (first + self.group) * self.block_width


def plan_buckets(low: float, high: float, buckets: int, top: int | None = None) -> Buckets:
    """At most `buckets` aligned buckets covering [low, high] (low < high), as close to that many as
    the block widths allow (at least half). `top`: the coarsest level to use."""
    per_bucket = high / buckets - low / buckets  # the span divided first: high - low may overflow
    level = math.floor(math.log(per_bucket, 16))
    # log() rounds: settle 16**level <= per_bucket < 16**(level + 1) exactly.
    while level > -LEVEL_BOUND and summary.width(level) > per_bucket:
        level -= 1
    while level < LEVEL_BOUND and summary.width(level + 1) <= per_bucket:
        level += 1
    if top is not None:
        level = min(level, top)
    w = summary.width(level)
    group = max(1, math.ceil(per_bucket / w))
    while (math.floor(high / w) // group) - (math.floor(low / w) // group) + 1 > buckets:
        group += 1
    return Buckets(level, group)


# Block widths stay normal floats (16**255 is about 2**1020).
LEVEL_BOUND = 255


def _downsample(
    query: Any, axis: Axis, since: float | None, until: float | None, max_points: int
) -> list[tuple[int, float, float]]:
    """At most `max_points` points: the x range cut into at most max_points // 2 buckets of equal
    width (see Buckets), each giving its lowest and highest point (so a single spike survives; ties
    on y go to the smallest x), oldest first. Read from the axis's summary rows where it has them."""
    if max_points < 2:
        raise InvalidInput("max_points must be at least 2", field="max_points")
    max_points = min(max_points, MAX_LIMIT)  # bounds memory like `limit` does
    db = Point._meta.database
    # One snapshot for the summary rows and the points (a writer may commit in between).
    with db.atomic():
        # Reading max_points + 1 rows is cheaper than COUNT(*) over a large range and answers small ones.
        head = [(i, float(x), float(y)) for i, x, y in _rows_of(db, query.order_by(Point.x).limit(max_points + 1))]
        if len(head) <= max_points:
            return head
        low = head[0][1]
        high = float(_rows_of(db, query.order_by(Point.x.desc()).limit(1))[0][1])
        # x is unique per axis and there are more points than max_points, so high > low.
        finest = Axis.select(Axis.summary_level).where(Axis.id == axis.id).scalar()
        buckets = max_points // 2
        if summary.kept(finest):
            top = finest + summary.LEVELS - 1
            plan = plan_buckets(low, high, buckets, top)
            if plan.level >= finest:
                merged = _from_summary(db, axis.id, plan, low, high, since, until)
                return _points_of(merged)
        plan = plan_buckets(low, high, buckets)
        if _is_sqlite(db):
            merged = _extremes_by_range(db, axis.id, plan, low, high)
        else:
            merged = _extremes_by_window(db, axis.id, plan, low, high)
        return _points_of(merged)


def _rows_of(db: pw.Database, query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples: Peewee's per-value conversions cost more than SQLite's reading."""
    sql, params = query.sql()
    return list(_execute(db, sql, params).fetchall())


def _points_of(buckets: dict[int, summary.Extremes]) -> list[tuple[int, float, float]]:
    """Each bucket's lowest and highest point (one when they are the same), oldest first."""
    result: list[tuple[int, float, float]] = []
    for bucket in sorted(buckets):
        _, low_y, low_x, low_id, high_y, high_x, high_id = buckets[bucket]
        if low_id == high_id:
            result.append((int(low_id), low_x, low_y))
        elif low_x < high_x:
            result += [(int(low_id), low_x, low_y), (int(high_id), high_x, high_y)]
        else:
            result += [(int(high_id), high_x, high_y), (int(low_id), low_x, low_y)]
    return result


def _add_point(buckets: dict[int, summary.Extremes], plan: Buckets, point: tuple[int, float, float]) -> None:
    i, x, y = point
    summary.merge_into(buckets, plan.bucket_of(x), [1, y, x, i, y, x, i])


def _from_summary(
    db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float, since: float | None, until: float | None
) -> dict[int, summary.Extremes]:
    """Buckets from the summary rows of plan.level; a block only partly inside [since, until] is read
    from the points."""
    w = plan.block_width
    first, last = math.floor(low / w), math.floor(high / w)
    full_first = first if since is None or since <= first * w else first + 1
    full_last = last if until is None or until >= (last + 1) * w else last - 1
    buckets: dict[int, summary.Extremes] = {}
    if full_first <= full_last:
        for block, extremes in summary.extremes(axis_id, plan.level, full_first, full_last).items():
            summary.merge_into(buckets, block // plan.group, extremes)
    partial: list[tuple[float, float]] = []
    if full_first > first:
        partial.append((low, min(high, (first + 1) * w)))
    if full_last < last and (last > first or full_first == first):
        partial.append((max(low, last * w), high))
    for lo, hi in partial:
        for point in _range_extremes(axis_id, lo, hi):
            _add_point(buckets, plan, point)
    return buckets


def _range_extremes(axis_id: int, lo: float, hi: float) -> list[tuple[int, float, float]]:
    """The lowest and the highest point with lo <= x <= hi (ties: smallest x)."""
    query: Any = Point.select(Point.id, Point.x, Point.y).where(
        (Point.axis == axis_id) & (Point.x >= lo) & (Point.x <= hi)
    )
    found = []
    for order in ((Point.y, Point.x), (Point.y.desc(), Point.x)):
        row = query.order_by(*order).limit(1).tuples().first()
        if row is not None:
            found.append((int(row[0]), float(row[1]), float(row[2])))
    return found


_RANGE_EXTREMES = (
    f"SELECT {_ID}, {_X}, {_Y}, MIN({_Y}), MAX({_Y}) FROM {_TABLE} WHERE {_AXIS} = ? AND {_X} >= ? AND {_X} {{}} ?"
)
_RANGE_FIND = (
    f"SELECT {_ID}, {_X}, {_Y} FROM {_TABLE} WHERE {_AXIS} = ? AND {_X} >= ? AND {_X} {{}} ? AND {_Y} = ?"
    f" ORDER BY {_X} LIMIT 1"
)


def _extremes_by_range(
    db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float
) -> dict[int, summary.Extremes]:
    """SQLite, from the points: one aggregate per bucket over its x range of the (axis, x) index.

    A GROUP BY on the bucket number sorts every row in a temporary B-tree (about 3x slower over a
    million points); ranges read the index in order and sort nothing. With MIN() and MAX() together
    SQLite takes the bare columns from the row of one of them; each extreme's first row (smallest x)
    is then looked up, which is quick in the index.
    """
    buckets: dict[int, summary.Extremes] = {}
    cursor = db.cursor()  # type: ignore[no-untyped-call]
    first, last = plan.bucket_of(low), plan.bucket_of(high)
    for bucket in range(first, last + 1):
        lo, hi = plan.bounds(bucket)
        # Half-open buckets; the last one is closed so the newest point belongs to it.
        op = "<=" if bucket == last else "<"
        params = (axis_id, max(lo, low), high if bucket == last else hi)
        row = cursor.execute(_RANGE_EXTREMES.format(op), params).fetchone()
        if row is None or row[3] is None:
            continue  # empty bucket
        found = []
        for y in {row[3], row[4]}:
            match = cursor.execute(_RANGE_FIND.format(op), (*params, y)).fetchone()
            found.append((int(match[0]), float(match[1]), float(match[2])))
        for point in found:
            _add_point(buckets, plan, point)
    return buckets


def _extremes_by_window(
    db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float
) -> dict[int, summary.Extremes]:
    """PostgreSQL, from the points: one statement ranking each bucket's rows by y both ways."""
    p = db.param
    sql = (
        f"WITH t AS (SELECT {_ID} AS id, {_X} AS x, {_Y} AS y,"
        f" FLOOR(FLOOR({_X} / {p}) / {p}) AS b FROM {_TABLE}"
        f" WHERE {_AXIS} = {p} AND {_X} >= {p} AND {_X} <= {p}),"
        " r AS (SELECT id, x, y, ROW_NUMBER() OVER (PARTITION BY b ORDER BY y, x) AS rank_low,"
        " ROW_NUMBER() OVER (PARTITION BY b ORDER BY y DESC, x) AS rank_high FROM t)"
        " SELECT id, x, y FROM r WHERE rank_low = 1 OR rank_high = 1 ORDER BY x"
    )
    cursor = _execute(db, sql, (plan.block_width, plan.group, axis_id, low, high))
    buckets: dict[int, summary.Extremes] = {}
    for i, x, y in cursor.fetchall():
        _add_point(buckets, plan, (int(i), float(x), float(y)))
    return buckets


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
