"""Retention: deleting the points a feed no longer keeps (the original's TODO "cleaning of the database").

A feed keeps points for `retention_days` and/or the newest `retention_points` per axis:
- age: datetime feeds compare x (the time the point is about, read from the (axis, x) index), so an
  imported history older than the limit goes too; float and int feeds have no time in x and use
  `received_at` instead.
- count: every point older (smaller x) than the axis's `retention_points`-th newest.

The purge deletes in small batches, each in its own short transaction, and pauses between them at
least as long as the batch took: SQLite has one writer, and the bridge must never wait long for it.
Each batch lowers `Axis.point_count` by the rows it really deleted and, only when it removed the
axis's newest point, moves `last_x`/`last_y` to the newest point left. Every axis that lost points
gets a PurgeLog row for the dashboard.

Alert events are trimmed the same way (`trim_alert_events`): each rule keeps its newest `EVENTS_KEPT`;
a rule flapping with every point (1,000 transitions a second) added 3.6 million rows an hour.

Synchronous (Peewee): call it from a thread, never from an event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import peewee as pw

from rtdp.casts import XCast
from rtdp.models import AlertEvent, Axis, Feed, Point, PurgeLog
from rtdp.store import get_feed, summary
from rtdp.store.dialect import dialect_of

T = TypeVar("T")

DAY = 86_400.0
# Upper bound for `batch`: ids are bound parameters (SQLite allows 32,766 per statement).
MAX_BATCH = 30_000
# A delete transaction aims at this duration; the batch shrinks when one takes longer.
TARGET_SECONDS = 0.01
# Smaller batches would not shorten a transaction much more: its commit costs the same.
MIN_BATCH = 500
# The PurgeLog keeps about this many recent rows (the dashboard shows the latest, not all).
LOG_KEPT = 10_000
# Events each alert rule keeps, newest first (its history on /alerts and in the API).
EVENTS_KEPT = 10_000
# Tries of one batch when SQLite answers "database is locked" (each after its 5 s busy timeout).
LOCK_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AxisPurge:
    """What one axis lost (or would lose, in a dry run)."""

    feed: str
    axis: str
    removed: int


@dataclass(frozen=True)
class PurgeReport:
    now: float
    dry_run: bool
    # Only axes that lost points, in feed then axis name order.
    axes: tuple[AxisPurge, ...] = ()
    batches: int = 0
    seconds: float = 0.0
    # The longest delete transaction (seconds): what a writer may have waited for at worst.
    longest: float = 0.0
    # True when `stop` was set before the purge finished.
    interrupted: bool = False

    @property
    def removed(self) -> int:
        return sum(a.removed for a in self.axes)


@dataclass
class _Progress:
    limit: int  # the caller's `batch`: never exceeded
    batch: int
    batches: int = 0
    longest: float = 0.0
    axes: list[AxisPurge] = field(default_factory=list)


def purge(
    now: float,
    *,
    dry_run: bool = False,
    batch: int = 5000,
    feeds: Iterable[str] | None = None,
    pause: float | None = None,
    stop: threading.Event | None = None,
) -> PurgeReport:
    """Delete the points beyond each feed's retention, as of `now` (epoch seconds).

    `batch` is the most rows one transaction deletes (it shrinks when a transaction takes longer
    than ~10 ms). Between transactions the purge sleeps `pause` seconds, by default as long as the
    transaction took. `feeds` limits it to these feed names (NotFound for an unknown one). `dry_run`
    counts what would go and changes nothing. Setting `stop` ends it between two batches.
    """
    started = time.monotonic()
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be 1-{MAX_BATCH}, got {batch}")
    query = Feed.select().where(Feed.retention_days.is_null(False) | Feed.retention_points.is_null(False))
    if feeds is not None:
        ids = [get_feed(name).id for name in feeds]
        query = query.where(Feed.id.in_(ids))
    progress = _Progress(limit=batch, batch=batch)
    interrupted = False
    for feed in list(query.order_by(Feed.name)):
        for axis in list(Axis.select().where(Axis.feed == feed.id).order_by(Axis.name)):
            if stop is not None and stop.is_set():
                interrupted = True
                break
            removed, interrupted = _purge_axis(feed, axis, now, dry_run, pause, stop, progress)
            if removed:
                progress.axes.append(AxisPurge(feed.name, axis.name, removed))
                if not dry_run:
                    PurgeLog.create(feed=feed.name, axis=axis.name, removed=removed, at=now)
        if interrupted:
            break
    if progress.axes and not dry_run:
        newest = PurgeLog.select(pw.fn.MAX(PurgeLog.id)).scalar() or 0
        PurgeLog.delete().where(PurgeLog.id <= newest - LOG_KEPT).execute()
    return PurgeReport(
        now=now,
        dry_run=dry_run,
        axes=tuple(progress.axes),
        batches=progress.batches,
        seconds=time.monotonic() - started,
        longest=progress.longest,
        interrupted=interrupted,
    )


def trim_alert_events(
    *, kept: int = EVENTS_KEPT, batch: int = 5000, stop: threading.Event | None = None
) -> int:
    """Delete each alert rule's events beyond its newest `kept`, at most `batch` per transaction, each tried
    again while SQLite's lock stays taken and followed by a pause, as `purge` does; how many went. Setting
    `stop` ends it between two batches."""
    count = pw.fn.COUNT(AlertEvent.id)
    over: Any = AlertEvent.select(AlertEvent.rule_id).group_by(AlertEvent.rule_id).having(count > kept).tuples()
    removed = 0
    for (rule_id,) in list(over):
        # The oldest event kept: below it everything of this rule goes (ids only grow).
        oldest_kept: Any = (
            AlertEvent.select(AlertEvent.id).where(AlertEvent.rule_id == rule_id)
            .order_by(AlertEvent.id.desc()).offset(kept - 1).limit(1).scalar()
        )
        if oldest_kept is None:
            continue
        while not (stop is not None and stop.is_set()):
            oldest: Any = (
                AlertEvent.select(AlertEvent.id)
                .where((AlertEvent.rule_id == rule_id) & (AlertEvent.id < oldest_kept))
                .order_by(AlertEvent.id).limit(batch).tuples()
            )
            ids = [i for (i,) in oldest]
            if not ids:
                break
            started = time.monotonic()
            removed += _when_unlocked(partial(_delete_events, ids))
            pause = time.monotonic() - started  # the writer's turn: never hold the database for long
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
    return removed


def _delete_events(ids: list[int]) -> int:
    db = AlertEvent._meta.database
    with dialect_of(db).write_transaction(db):
        deleted: int = AlertEvent.delete().where(AlertEvent.id.in_(ids)).execute()
    return deleted


def recent_purges(limit: int = 100) -> list[PurgeLog]:
    """The newest PurgeLog rows, newest first (for the dashboard)."""
    return list(PurgeLog.select().order_by(PurgeLog.id.desc()).limit(limit))


def _condition(feed: Feed, axis: Axis, now: float) -> Any | None:
    """The points of `axis` past the feed's retention as a Peewee expression, or None for none."""
    parts: list[Any] = []
    below: float | None = None
    if feed.retention_days is not None:
        cutoff = now - float(feed.retention_days) * DAY
        if feed.x_cast == XCast.DATETIME.value:
            below = cutoff
        else:
            parts.append(Point.received_at < cutoff)
    limit = feed.retention_points
    # point_count is kept exact by every writer; it spares a scan of axes within their limit.
    if limit is not None and axis.point_count > limit:
        nth: Any = (
            Point.select(Point.x)
            .where(Point.axis == axis.id)
            .order_by(Point.x.desc())
            .offset(limit - 1)
            .limit(1)
            .scalar()
        )
        if nth is not None:
            below = float(nth) if below is None else max(below, float(nth))
    if below is not None:
        parts.append(Point.x < below)
    if not parts:
        return None
    condition = parts[0]
    for part in parts[1:]:
        condition = condition | part
    return (Point.axis == axis.id) & (condition)


def _purge_axis(
    feed: Feed,
    axis: Axis,
    now: float,
    dry_run: bool,
    pause: float | None,
    stop: threading.Event | None,
    progress: _Progress,
) -> tuple[int, bool]:
    """Points removed from one axis, and whether `stop` cut it short."""
    condition = _condition(feed, axis, now)
    if condition is None:
        return 0, False
    if dry_run:
        return Point.select().where(condition).count(), False
    removed = 0
    while True:
        began = time.monotonic()
        deleted, selected = _when_unlocked(partial(_delete_batch, axis.id, condition, progress.batch))
        took = time.monotonic() - began
        progress.batches += 1
        progress.longest = max(progress.longest, took)
        removed += deleted
        if selected < progress.batch:
            return removed, False
        # Keep transactions short whatever the disk and the load: halve or grow the batch.
        if took > TARGET_SECONDS:
            progress.batch = max(min(MIN_BATCH, progress.limit), progress.batch // 2)
        elif took < TARGET_SECONDS / 2:
            progress.batch = min(progress.limit, progress.batch * 2)
        if stop is not None and stop.is_set():
            return removed, True
        # Let the bridge's writer in: it may be waiting for SQLite's one write lock.
        time.sleep(took if pause is None else pause)


def _when_unlocked(delete: Callable[[], T]) -> T:
    """`delete()` (one short transaction), tried again when SQLite's write lock stayed taken for the whole
    busy timeout.

    SQLite's busy handler polls: a writer committing back to back (the bridge at full load) can keep
    winning the lock. The purge is the one that can wait, so it backs off and tries again.
    """
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return delete()
        except pw.OperationalError as exc:
            if not dialect_of(Point._meta.database).locked(exc) or attempt == LOCK_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _delete_batch(axis_id: int, condition: Any, batch: int) -> tuple[int, int]:
    """Delete up to `batch` points matching `condition` in one transaction: (deleted, selected)."""
    # Choose the rows before taking the write lock: the lock is held only for the delete itself.
    # The delete checks the condition again, so a point replaced meanwhile (new id) is left alone.
    selected: Any = Point.select(Point.id, Point.x).where(condition).order_by(Point.x).limit(batch).tuples()
    rows: list[tuple[int, float]] = list(selected)
    if not rows:
        return 0, 0
    db = Point._meta.database
    dialect = dialect_of(db)
    # The write lock first (SQLite): a deferred transaction that read first could fail with "database
    # is locked" when the bridge committed in between.
    with dialect.write_transaction(db):
        # Before touching its points (PostgreSQL): a writer of this axis and the purge wait for each
        # other instead of deadlocking.
        dialect.lock_axis(db, axis_id)
        # Count what really went: a concurrent replacement may have deleted some of these ids.
        deleted = Point.delete().where(Point.id.in_([i for i, _ in rows]) & condition).execute()
        if deleted:
            Axis.update(point_count=Axis.point_count - deleted).where(Axis.id == axis_id).execute()
            top = max(float(x) for _, x in rows)
            current = Axis.get_by_id(axis_id)
            if summary.kept(current.summary_level):
                summary.refresh(db, axis_id, current.summary_level, (float(x) for _, x in rows))
            if current.last_x is not None and top >= current.last_x:
                _refresh_last(axis_id)
    return deleted, len(rows)


def _refresh_last(axis_id: int) -> None:
    """The newest point was deleted: last_x/last_y become the newest left (None when none is)."""
    newest: Any = (
        Point.select(Point.x, Point.y).where(Point.axis == axis_id).order_by(Point.x.desc()).limit(1).tuples().first()
    )
    last_x, last_y = (float(newest[0]), float(newest[1])) if newest else (None, None)
    Axis.update(last_x=last_x, last_y=last_y).where(Axis.id == axis_id).execute()
