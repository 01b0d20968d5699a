from __future__ import annotations

from typing import Any

import peewee as pw

from bridge.retention import RetentionScheduler
from rtdp.codec import Sample
from rtdp.models import Point, PurgeLog, User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, write_points
from tests.support.env import wait_for


def stored_xs() -> list[float]:
    query: Any = Point.select(Point.x).order_by(Point.x).tuples()
    return [float(x) for (x,) in query]


def test_scheduler_purges_on_start_and_on_schedule(any_db: pw.Database) -> None:
    owner = User.create(email="ep@nothing.com", password_hash="unused")
    feed = create_feed("scheduled", owner, x_cast="float", retention_points=2)
    axis = create_axis(feed, "a")
    write_points([(axis.id, Sample(float(i), 0.0)) for i in range(10)])
    scheduler = RetentionScheduler(Settings.build(env={}, retention_interval=0.05), any_db)
    scheduler.start()
    try:
        wait_for(lambda: Point.select().count() == 2, what="the first purge")
        # Points written later go at a later run, without a restart.
        write_points([(axis.id, Sample(float(i), 0.0)) for i in range(100, 105)])
        wait_for(lambda: Point.select().count() == 2 and scheduler.runs >= 2, what="a scheduled purge")
    finally:
        scheduler.stop()
    assert scheduler.failures == 0
    assert sorted(r.removed for r in PurgeLog.select()) == [5, 8]
    assert stored_xs() == [103.0, 104.0]


def test_interval_zero_disables(any_db: pw.Database) -> None:
    scheduler = RetentionScheduler(Settings.build(env={}, retention_interval=0), any_db)
    assert not scheduler.enabled
    scheduler.start()
    scheduler.stop()
    assert scheduler.runs == 0


def test_a_failed_purge_is_logged_and_retried(sqlite_db: pw.Database) -> None:
    scheduler = RetentionScheduler(Settings.build(env={}, retention_interval=0.02), sqlite_db)
    sqlite_db.execute_sql("DROP TABLE purge_log")  # type: ignore[no-untyped-call]
    owner = User.create(email="ep@nothing.com", password_hash="unused")
    feed = create_feed("broken", owner, x_cast="float", retention_points=1)
    axis = create_axis(feed, "a")
    write_points([(axis.id, Sample(float(i), 0.0)) for i in range(3)])
    scheduler.start()
    try:
        wait_for(lambda: scheduler.failures >= 1, what="a failed run")
        assert scheduler.last is None
        sqlite_db.create_tables([PurgeLog])
        write_points([(axis.id, Sample(float(i), 0.0)) for i in range(10, 13)])
        wait_for(lambda: scheduler.last is not None and scheduler.last.removed, what="the thread to go on")
    finally:
        scheduler.stop()
    assert stored_xs() == [12.0]
