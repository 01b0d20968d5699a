"""Reading points: history, downsampling (from rtdp.store.summary where an axis has it) and SSE
replay. Synchronous (Peewee): call it from a thread, never from an event loop."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import peewee as pw

from rtdp.errors import InvalidInput
from rtdp.models import Axis, Feed, FeedHead, Point
from rtdp.store import summary
from rtdp.store.dialect import dialect_of, execute

MAX_LIMIT = 100_000


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
    rtdp.store.summary), aligned to multiples of their width. Aligned, a bucket is a union of summary
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
                return _points_of(_from_summary(db, axis.id, plan, low, high, since, until))
        plan = plan_buckets(low, high, buckets)
        merged: dict[int, summary.Extremes] = {}
        for point in dialect_of(db).extremes_from_points(db, axis.id, plan, low, high):
            _add_point(merged, plan, point)
        return _points_of(merged)


def _rows_of(db: pw.Database, query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples: Peewee's per-value conversions cost more than SQLite's reading."""
    sql, params = query.sql()
    return list(execute(db, sql, params).fetchall())


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




def points_after_named(feed: str, last_id: int, limit: int = 10_000) -> list[tuple[int, str, float, float]]:
    """points_after for a feed by name; none when there is no such feed (any more)."""
    found = Feed.get_or_none(Feed.name == feed)
    return [] if found is None else points_after(found, last_id, limit)


def feed_head(feed: Feed) -> int | None:
    """The id of the feed's newest committed point as its writers recorded it (FeedHead); None before
    its first write since the head was kept."""
    head: int | None = FeedHead.select(FeedHead.last_id).where(FeedHead.feed == feed.id).scalar()
    return head
