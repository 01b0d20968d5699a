"""The database goes away under the bridge: nothing is acknowledged until it is back, nothing is lost."""

from __future__ import annotations

import json
import sqlite3
import threading

import peewee as pw
import pytest

from rtdp.models import Point, User
from tests.bridge.conftest import BridgeHarness, make_feed
from tests.support.env import wait_for


def _count(db: pw.Database) -> int:
    try:
        return int(Point.select().count())
    except (pw.OperationalError, pw.InterfaceError):
        db.close()  # our own connection was killed too; the next poll opens a new one
        return -1


@pytest.mark.parametrize("any_db", ["sqlite"], indirect=True)
def test_locked_sqlite_is_retried_until_it_frees(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="int")
    bridge = harness.start()
    harness.publisher.send("feeds/f/a", '{"x": -1, "y": 0}')  # the axis exists before the lock
    wait_for(lambda: _count(harness.db) == 1, what="first point")
    path = harness.db.database
    locker = sqlite3.connect(path, timeout=0, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # holds the write lock: the bridge's commits time out
    try:
        for i in range(20):
            harness.publisher.send("feeds/f/a", json.dumps({"x": i, "y": i}))
        wait_for(lambda: bridge.stats.db_failures >= 1, timeout=20, what="a failed commit")
        assert _count(harness.db) == 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_for(lambda: _count(harness.db) == 21, timeout=20, what="all points after the lock")
    assert bridge.stats.points_stored == 21


@pytest.mark.parametrize("any_db", ["postgres"], indirect=True)
def test_killed_postgres_connections_lose_nothing(harness: BridgeHarness, owner: User, pg_url: str) -> None:
    import psycopg2

    make_feed(owner, "f", x_cast="int")
    bridge = harness.start()
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    stop = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        with admin.cursor() as cursor:
            while not stop.wait(0.05):
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                row = cursor.fetchone()
                kills += row[0] if row else 0

    thread = threading.Thread(target=killer)
    thread.start()
    sent = 0
    try:
        # Keep publishing until several commits have failed (bounded: at most 20,000 points).
        while sent < 20_000 and (bridge.stats.db_failures < 3 or sent < 300):
            for _ in range(50):
                harness.publisher.client.publish("feeds/f/a", json.dumps({"x": sent, "y": sent}), qos=1)
                sent += 1
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
        admin.close()
    try:
        assert bridge.stats.db_failures >= 3 and kills >= 3
        wait_for(lambda: _count(harness.db) == sent, timeout=60, what=f"all {sent} points")
        xs = sorted(x for x, _ in harness.points("f", "a"))
        assert xs == list(range(sent))
    finally:
        harness.db.close()  # the fixture's clean-up needs a live connection, not a killed one
