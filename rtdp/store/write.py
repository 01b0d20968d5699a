"""Writing points: one transaction per batch that inserts, replaces, counts and summarises.
Synchronous (Peewee): call it from a thread, never from an event loop."""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import peewee as pw

from rtdp.codec import Sample
from rtdp.errors import Conflict
from rtdp.models import Axis, FeedHead, Point
from rtdp.store import summary
from rtdp.store.dialect import dialect_of, execute

REPLACE_ATTEMPTS = 5
# Heads remembered by `_move_heads` (feed id -> the id it moved the head to), at most about this many.
HEADS_KEPT = 10_000
_heads_moved: dict[int, int] = {}


class StoredPoint(NamedTuple):
    """A committed point. A NamedTuple, not a dataclass: one is built per stored row, and a frozen
    dataclass cost as much per point as all of the decoding (measured in the bridge's profile)."""

    id: int
    axis_id: int
    x: float
    y: float


class Written(list[StoredPoint]):
    """The stored points of a batch in id order, and for each of their axes the id of the newest point
    its feed had before the batch (`follows`; None when the feed has no FeedHead row yet): what a stored
    notice says it follows, so a viewer can tell when a batch of another writer is missing."""

    def __init__(self, points: list[StoredPoint], follows: dict[int, int | None]) -> None:
        super().__init__(points)
        self.follows = follows


def write_points(
    batch: Sequence[tuple[int, Sample]],
    received_at: float | None = None,
    feeds: Mapping[int, int] | None = None,
    *,
    live: bool = True,
) -> Written:
    """Upsert `(axis_id, sample)` pairs in one transaction; a later point with the same axis and x
    replaces an earlier one and gets a new id. Returns the stored points in id order, with the head each
    feed had before (see Written); moves the feeds' heads (FeedHead) to the batch's newest ids.
    `live=False` (an import of history) leaves the axes' `last_seen`: no device sent anything now, and a
    `silent` alert rule reads it.

    Inside the caller's transaction when one is open (no savepoint: an error here must end it), else in
    its own. `feeds`, when the caller knows them (the bridge's routes): the feed id of every axis of
    `batch`, which spares a query on SQLite (an axis never changes feeds).

    Runs hand-written, parameterised SQL through Peewee's `execute_sql`: building an `insert_many`
    query costs more Python time than SQLite spends storing the rows (see bench/store_bench.py).
    """
    if not batch:
        return Written([], {})
    received = time.time() if received_at is None else received_at
    # Within one batch the last sample for an (axis, x) wins (at the place of the first).
    latest = {(axis_id, sample.x): sample.y for axis_id, sample in batch}
    db = Point._meta.database
    dialect = dialect_of(db)
    stored: list[StoredPoint] = []
    rows = [(axis_id, x, y) for (axis_id, x), y in latest.items()]
    with contextlib.nullcontext() if db.in_transaction() else db.atomic():
        # Writers of the same axes on a database that has several at once take turns (PostgreSQL).
        feed_of = dialect.lock_for_write(db, rows)
        # Insert what is new; a row that collides on (axis, x) is skipped here and replaced below.
        stored.extend(map(StoredPoint._make, dialect.insert_points(db, rows, received)))
        pending: list[tuple[int, float, float]] = []
        if len(stored) < len(rows):
            inserted = {(p.axis_id, p.x) for p in stored}
            pending = [row for row in rows if (row[0], row[1]) not in inserted]
        # Where points were replaced, the summaries' extremes may have gone with the old rows.
        replaced_xs: dict[int, list[float]] = defaultdict(list)
        for axis_id, x, _ in pending:
            replaced_xs[axis_id].append(x)
        # Replace with a new (higher) id for SSE replay (see Dialect.replace_points). Repeated because
        # where writers run at once a concurrent one may delete or insert the same (axis, x) in between
        # (the purge, another bridge of a share group).
        replaced: dict[int, int] = defaultdict(int)
        for _ in range(REPLACE_ATTEMPTS):
            if not pending:
                break
            updated, absent = dialect.replace_points(db, pending, received, replaced)
            done = list(map(StoredPoint._make, updated))
            done.extend(map(StoredPoint._make, dialect.insert_points(db, absent, received)))
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
            params = (received if live else None, count - replaced[axis_id], top_x, top_y, top_x, top_x, axis_id)
            total, level = execute(db, _count_sql(db.param), params).fetchone()
            levels[axis_id] = (int(total), level)
        stored.sort()  # by id: a StoredPoint is a tuple that starts with it
        _summarise(db, stored, levels, replaced_xs)
        if feed_of is None and feeds is not None:
            feed_of = {axis_id: feeds[axis_id] for axis_id in newest}
        if feed_of is None:
            axes = sorted(newest)
            feed_of = dict(execute(db, _feeds_of_sql(db.param, len(axes)), axes).fetchall())
        follows = _move_heads(db, stored, feed_of)
    return Written(stored, follows)


def _move_heads(db: pw.Database, stored: list[StoredPoint], feed_of: dict[int, int]) -> dict[int, int | None]:
    """Move each feed's FeedHead to its newest point of `stored` (in id order); per axis, the head before.
    Under lock_for_write's locks, so the heads of a feed follow each other in commit order."""
    newest: dict[int, int] = {}
    for point in stored:
        newest[feed_of[point.axis_id]] = point.id
    if not newest:
        return {}
    before: dict[int, int | None] = {}
    # A head this process moved last is most likely still there: moved on that condition, one statement
    # instead of a read and a write. Where the row says otherwise (another writer, a rolled-back
    # transaction), it is read and moved as below.
    for feed, last in newest.items():
        known = _heads_moved.get(feed)
        if known is not None and execute(db, _move_head_if_sql(db.param), (last, feed, known)).rowcount == 1:
            before[feed] = known
    missing = [feed for feed in newest if feed not in before]
    if missing:
        before.update(execute(db, _heads_sql(db.param, len(missing)), missing).fetchall())
        params: list[object] = []
        for feed in missing:
            params += (feed, newest[feed])
        execute(db, _move_heads_sql(db.param, len(missing)), params)
    if len(_heads_moved) > HEADS_KEPT:
        _heads_moved.clear()
    _heads_moved.update(newest)
    return {axis_id: before.get(feed) for axis_id, feed in feed_of.items()}


def _summarise(
    db: pw.Database,
    stored: list[StoredPoint],
    levels: dict[int, tuple[int, int | None]],
    replaced_xs: dict[int, list[float]],
) -> None:
    """Keep each axis's per-block summaries (rtdp.store.summary) exact after a write."""
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


_AXIS_TABLE = Axis._meta.table_name
_AXIS_ID, _LAST_SEEN, _COUNT, _LEVEL, _LAST_X, _LAST_Y, _FEED = (
    f.column_name
    for f in (Axis.id, Axis.last_seen, Axis.point_count, Axis.summary_level, Axis.last_x, Axis.last_y, Axis.feed)
)


@functools.lru_cache(maxsize=4)
def _count_sql(param: str) -> str:
    """An axis after a write: when it was seen, how many points it has, and its newest (x, y) unless
    it already had a later x."""
    newer = f"{_LAST_X} IS NULL OR {_LAST_X} <= {param}"
    return (
        f"UPDATE {_AXIS_TABLE} SET {_LAST_SEEN} = COALESCE({param}, {_LAST_SEEN}), {_COUNT} = {_COUNT} + {param},"
        f" {_LAST_Y} = CASE WHEN {newer} THEN {param} ELSE {_LAST_Y} END,"
        f" {_LAST_X} = CASE WHEN {newer} THEN {param} ELSE {_LAST_X} END"
        f" WHERE {_AXIS_ID} = {param} RETURNING {_COUNT}, {_LEVEL}"
    )


_HEAD_TABLE = FeedHead._meta.table_name
_HEAD_FEED, _HEAD_LAST = FeedHead.feed.column_name, FeedHead.last_id.column_name


@functools.lru_cache(maxsize=16)
def _feeds_of_sql(param: str, axes: int) -> str:
    return f"SELECT {_AXIS_ID}, {_FEED} FROM {_AXIS_TABLE} WHERE {_AXIS_ID} IN ({','.join([param] * axes)})"


@functools.lru_cache(maxsize=16)
def _heads_sql(param: str, feeds: int) -> str:
    return f"SELECT {_HEAD_FEED}, {_HEAD_LAST} FROM {_HEAD_TABLE} WHERE {_HEAD_FEED} IN ({','.join([param] * feeds)})"


@functools.lru_cache(maxsize=4)
def _move_head_if_sql(param: str) -> str:
    return f"UPDATE {_HEAD_TABLE} SET {_HEAD_LAST} = {param} WHERE {_HEAD_FEED} = {param} AND {_HEAD_LAST} = {param}"


@functools.lru_cache(maxsize=16)
def _move_heads_sql(param: str, feeds: int) -> str:
    values = ",".join([f"({param}, {param})"] * feeds)
    return (
        f"INSERT INTO {_HEAD_TABLE} ({_HEAD_FEED}, {_HEAD_LAST}) VALUES {values}"
        f" ON CONFLICT ({_HEAD_FEED}) DO UPDATE SET {_HEAD_LAST} = excluded.{_HEAD_LAST}"
    )
