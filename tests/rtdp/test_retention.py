from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from click.testing import CliRunner

from rtdp import database
from rtdp.cli import main
from rtdp.codec import Sample
from rtdp.database import SCHEMA_VERSION, SchemaVersion, open_database
from rtdp.errors import NotFound
from rtdp.models import AlertEvent, AlertRule, Axis, Feed, Point, PurgeLog, User
from rtdp.retention import DAY, LOG_KEPT, purge, recent_purges, trim_alert_events
from rtdp.store import create_axis, create_feed, write_points

NOW = 1_800_000_000.0


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return User.create(email="ep@nothing.com", password_hash="unused")


def fill(axis: Axis, xs: list[float], received_at: float = NOW) -> None:
    write_points([(axis.id, Sample(x, x % 7)) for x in xs], received_at=received_at)


def xs_of(axis: Axis) -> list[float]:
    query: Any = Point.select(Point.x).where(Point.axis == axis.id).order_by(Point.x).tuples()
    return [float(x) for (x,) in query]


def fresh(axis: Axis) -> Axis:
    return Axis.get_by_id(axis.id)


def days_ago(*days: float) -> list[float]:
    return [NOW - d * DAY for d in days]


def test_age_removes_exactly_the_older_points(owner: User) -> None:
    feed = create_feed("aged", owner, retention_days=2)
    axis = create_axis(feed, "a")
    fill(axis, days_ago(5, 3, 2.001, 1.999, 1, 0))
    report = purge(NOW, pause=0)
    assert xs_of(axis) == days_ago(1.999, 1, 0)
    assert [(a.feed, a.axis, a.removed) for a in report.axes] == [("aged", "a", 3)]
    assert report.removed == 3 and not report.dry_run
    assert fresh(axis).point_count == 3
    assert fresh(axis).last_x == NOW  # the newest point stayed: untouched


def test_count_keeps_the_newest_per_axis(owner: User) -> None:
    feed = create_feed("counted", owner, x_cast="float", retention_points=3)
    a, b, c = (create_axis(feed, name) for name in ("a", "b", "c"))
    fill(a, [float(i) for i in range(10)])
    fill(b, [5.0, 1.0, 9.0, 3.0])  # written out of order: "newest" means highest x
    fill(c, [1.0, 2.0])
    report = purge(NOW, pause=0)
    assert xs_of(a) == [7.0, 8.0, 9.0]
    assert xs_of(b) == [3.0, 5.0, 9.0]
    assert xs_of(c) == [1.0, 2.0]
    assert [(p.axis, p.removed) for p in report.axes] == [("a", 7), ("b", 1)]
    assert [fresh(x).point_count for x in (a, b, c)] == [3, 3, 2]


def test_age_and_count_together_take_the_stricter(owner: User) -> None:
    feed = create_feed("both", owner, retention_days=10, retention_points=4)
    many, few = create_axis(feed, "many"), create_axis(feed, "few")
    fill(many, days_ago(20, 15, 9, 8, 7, 6, 5, 4))  # count wins: newest 4
    fill(few, days_ago(30, 12, 11, 2))  # age wins: only 1 is within 10 days
    purge(NOW, pause=0)
    assert xs_of(many) == days_ago(7, 6, 5, 4)
    assert xs_of(few) == days_ago(2)
    assert (fresh(many).point_count, fresh(few).point_count) == (4, 1)


def test_non_datetime_feeds_age_by_received_time(owner: User) -> None:
    feed = create_feed("numbers", owner, x_cast="int", retention_days=1)
    axis = create_axis(feed, "a")
    fill(axis, [1.0, 2.0, 3.0], received_at=NOW - 2 * DAY)
    fill(axis, [4.0, 5.0], received_at=NOW - 0.5 * DAY)
    purge(NOW, pause=0)
    assert xs_of(axis) == [4.0, 5.0]
    assert fresh(axis).point_count == 2


def test_feeds_without_retention_and_other_feeds_are_untouched(owner: User) -> None:
    kept = create_feed("forever", owner)
    purged = create_feed("short", owner, retention_points=1)
    k, p = create_axis(kept, "a"), create_axis(purged, "a")
    fill(k, days_ago(1000, 500, 1))
    fill(p, days_ago(3, 2, 1))
    before = list(Point.select().where(Point.axis == k.id).order_by(Point.id).tuples())
    report = purge(NOW, pause=0, feeds=["forever"])
    assert report.removed == 0 and xs_of(p) == days_ago(3, 2, 1)
    purge(NOW, pause=0)
    assert list(Point.select().where(Point.axis == k.id).order_by(Point.id).tuples()) == before
    assert xs_of(p) == days_ago(1)
    with pytest.raises(NotFound):
        purge(NOW, feeds=["missing"])


def test_newest_point_removed_moves_last_values(owner: User) -> None:
    feed = create_feed("stale", owner, retention_days=1)
    gone, mixed = create_axis(feed, "gone"), create_axis(feed, "mixed")
    fill(gone, days_ago(3, 2))
    fill(mixed, days_ago(3, 0.5))
    before = fresh(gone).last_seen
    purge(NOW, pause=0)
    empty = fresh(gone)
    assert (empty.point_count, empty.last_x, empty.last_y) == (0, None, None)
    assert empty.last_seen == before  # when the bridge last received: a fact purging does not change
    assert fresh(mixed).last_x == NOW - 0.5 * DAY


def test_small_batches_delete_everything_and_count_right(owner: User) -> None:
    feed = create_feed("batched", owner, x_cast="float", retention_points=5)
    axis = create_axis(feed, "a")
    fill(axis, [float(i) for i in range(1000)])
    report = purge(NOW, batch=7, pause=0)
    assert report.batches >= 2 and 0 < report.longest <= report.seconds
    assert xs_of(axis) == [995.0, 996.0, 997.0, 998.0, 999.0]
    assert fresh(axis).point_count == 5 and report.removed == 995


def test_dry_run_changes_nothing(owner: User) -> None:
    feed = create_feed("dry", owner, retention_days=2, retention_points=2)
    axis = create_axis(feed, "a")
    fill(axis, days_ago(5, 1.5, 1, 0.5))
    before = list(Point.select().order_by(Point.id).tuples())
    report = purge(NOW, dry_run=True)
    assert report.dry_run and [(a.axis, a.removed) for a in report.axes] == [("a", 2)]
    assert list(Point.select().order_by(Point.id).tuples()) == before
    assert fresh(axis).point_count == 4
    assert PurgeLog.select().count() == 0
    assert purge(NOW, pause=0).removed == 2  # and the real purge removes what the dry run said


def test_purge_log_records_each_axis_and_stays_bounded(owner: User, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = create_feed("logged", owner, x_cast="float", retention_points=1)
    axis = create_axis(feed, "a")
    fill(axis, [1.0, 2.0, 3.0])
    purge(NOW, pause=0)
    assert [(r.feed, r.axis, r.removed, r.at) for r in recent_purges()] == [("logged", "a", 2, NOW)]
    monkeypatch.setattr("rtdp.retention.LOG_KEPT", 2)
    for i in range(4):
        fill(axis, [10.0 + i])
        purge(NOW + i, pause=0)
    assert [r.at for r in recent_purges()] == [NOW + 3, NOW + 2]
    assert LOG_KEPT >= 1000


def test_stop_ends_between_batches(owner: User) -> None:
    feed = create_feed("stopped", owner, x_cast="float", retention_points=1)
    axis = create_axis(feed, "a")
    fill(axis, [float(i) for i in range(100)])
    stop = threading.Event()
    stop.set()
    report = purge(NOW, batch=10, pause=0, stop=stop)
    assert report.interrupted
    assert fresh(axis).point_count == len(xs_of(axis)) == 100


def test_purge_while_the_bridge_writes(owner: User) -> None:
    """A writer thread keeps storing new points (and replacing old ones) while the purge runs in
    small batches: nothing that should be kept is lost and point_count matches the rows."""
    feed = create_feed("busy", owner, x_cast="float", retention_points=500)
    axis = create_axis(feed, "a")
    fill(axis, [float(i) for i in range(5000)])
    done, started = threading.Event(), threading.Event()
    written: list[float] = []
    errors: list[BaseException] = []
    db = Point._meta.database

    def writer() -> None:
        try:
            x = 5000.0
            while not done.is_set() or len(written) < 300:
                # New points, a replacement of a recent one, and an old one the purge may have deleted
                # already or may delete next (so its counts and the writer's interleave).
                batch = [(axis.id, Sample(x + i, 1.0)) for i in range(10)]
                batch += [(axis.id, Sample(x - 1, 2.0)), (axis.id, Sample(x % 4000, 3.0))]
                write_points(batch)
                written.extend(x + i for i in range(10))
                x += 10
                started.set()
                # Pacing, not synchronisation: a real bridge spends time on MQTT between transactions.
                # Without any gap SQLite's busy handler (it polls) may never catch the lock free.
                time.sleep(0.001)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(10)
        before = len(written)
        report = purge(NOW, batch=50, pause=0.001)
        during = len(written) - before
    finally:
        done.set()
        thread.join(30)
    assert not errors
    assert during > 0  # the writer really wrote while the purge ran (about 90 batches with pauses)
    assert report.removed >= 4500
    kept = xs_of(axis)
    # Everything the writer stored is newer than the threshold the purge worked with: all kept.
    assert set(written) <= set(kept)
    assert fresh(axis).point_count == len(kept)
    assert fresh(axis).last_x == max(kept)
    purge(NOW, pause=0)
    assert len(xs_of(axis)) == 500 and fresh(axis).point_count == 500


def test_cli_purge_prints_per_axis(tmp_path: Path, sqlite_db: pw.Database) -> None:
    owner = User.create(email="ep@nothing.com", password_hash="unused")
    feed = create_feed("cli_feed", owner, x_cast="float", retention_points=2)
    fill(create_axis(feed, "a"), [1.0, 2.0, 3.0, 4.0])
    fill(create_axis(feed, "b"), [1.0, 2.0])
    create_feed("other", owner, x_cast="float", retention_points=1)
    url = f"sqlite:///{tmp_path / 'rtdp.sqlite3'}"
    runner = CliRunner()
    dry = runner.invoke(main, ["purge", "--dry-run", "--db", url])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == ["cli_feed/a: would remove 2 points", "would remove 2 points from 1 axes"]
    assert Point.select().count() == 6
    real = runner.invoke(main, ["purge", "--feed", "cli_feed", "--db", url])
    assert real.exit_code == 0, real.output
    assert real.output.splitlines() == ["cli_feed/a: removed 2 points", "removed 2 points from 1 axes"]
    missing = runner.invoke(main, ["purge", "--feed", "nope", "--db", url])
    assert missing.exit_code == 1 and "no feed named 'nope'" in missing.output


def test_migration_adds_the_purge_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = open_database(url)
    db.drop_tables([PurgeLog])
    step = [m.__name__ for m in database.MIGRATIONS].index("_create_purge_log")
    SchemaVersion.update(version=step + 1).execute()  # the version just before that step
    db.close()
    db = open_database(url)
    assert "purge_log" in db.get_tables()
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_retention_settings_validated() -> None:
    from rtdp.errors import ConfigError
    from rtdp.settings import Settings

    assert Settings.build(env={}).retention_interval == 600
    assert Settings.build(env={"RTDP_RETENTION_INTERVAL": "0"}).retention_interval == 0
    with pytest.raises(ConfigError, match="^RTDP_RETENTION_INTERVAL: "):
        Settings.build(env={"RTDP_RETENTION_INTERVAL": "-1"})
    assert Feed.retention_days.null and Feed.retention_points.null


def test_each_alert_rule_keeps_its_newest_events(owner: User) -> None:
    """A rule flapping with every point added an event each time, never removed (3.6 million rows an hour
    at 1,000 transitions a second): each rule now keeps its newest `kept`, whatever the others have."""
    feed = create_feed("kitchen", owner)
    axis = create_axis(feed, "temperature")

    def rule(name: str) -> AlertRule:
        return AlertRule.create(feed=feed, axis=axis, owner=owner, name=name, kind="above", threshold=1.0,
                                secret="s" * 32)

    flapping, quiet = rule("flapping"), rule("quiet")
    AlertEvent.insert_many(
        [{"rule": flapping.id, "state": ("firing", "ok")[i % 2], "at": NOW + i} for i in range(25)]
        + [{"rule": quiet.id, "state": "firing", "at": NOW}]
    ).execute()
    assert trim_alert_events(kept=10, batch=4) == 15
    left: Any = AlertEvent.select(AlertEvent.at).where(AlertEvent.rule == flapping.id).order_by(AlertEvent.at)
    assert [event.at for event in left] == [NOW + i for i in range(15, 25)]
    assert AlertEvent.select().where(AlertEvent.rule == quiet.id).count() == 1
    assert trim_alert_events(kept=10) == 0
