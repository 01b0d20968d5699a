"""The batching writer without MQTT: routes, caches, rejections, and what a failed commit does."""

from __future__ import annotations

import json
import time

import peewee as pw
import pytest

import bridge.writer as writer_module
from bridge.stats import Stats
from bridge.writer import Incoming, Writer
from rtdp.models import Feed, Point, Rejection, User
from rtdp.settings import Settings
from tests.bridge.conftest import make_feed


def message(topic: str, payload: str, mid: int = 1, retain: bool = False) -> Incoming:
    return Incoming(topic, payload.encode(), mid, 1, retain, time.time())


@pytest.fixture
def writer(any_db: pw.Database) -> Writer:
    return Writer(any_db, Settings.build(env={}), Stats())


def test_one_transaction_for_a_mixed_batch(writer: Writer, owner: User) -> None:
    make_feed(owner, "f", x_cast="int")
    make_feed(owner, "g", x_cast="int")
    batch = [
        message("feeds/f/a", '{"x": 1, "y": 1}'),
        message("feeds/g/b", "[" + ",".join(json.dumps({"x": i, "y": i}) for i in range(5)) + "]"),
        message("feeds/f/a", "oops"),
        message("nonsense", "1"),
    ]
    result = writer.write(batch)
    assert result is not None
    assert (result.stored_points, result.stored_messages, result.rejected) == (6, 2, 2)
    topics = sorted(n.topic for n in result.notices)
    assert topics == ["rtdp/errors/f/a", "rtdp/errors/~/~", "rtdp/stored/f", "rtdp/stored/g"]
    stored_g = next(json.loads(n.payload) for n in result.notices if n.topic == "rtdp/stored/g")
    assert [p["x"] for p in stored_g] == [0, 1, 2, 3, 4] and all(p["axis"] == "b" for p in stored_g)
    assert Point.select().count() == 6
    assert sorted((r.feed, r.axis) for r in Rejection.select()) == [("f", "a"), ("~", "~")]
    assert writer.stats.rejected == {"invalid": 1, "bad_topic": 1}


def test_the_rejection_table_stays_bounded(writer: Writer, owner: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "REJECTIONS_KEPT", 5)
    make_feed(owner, "f")
    for n in range(4):
        writer.write([message("feeds/f/a", "bad") for _ in range(3)])
        assert Rejection.select().count() == min(3 * (n + 1), 5)


def test_a_deleted_feed_in_the_route_cache_becomes_a_rejection(writer: Writer, owner: User) -> None:
    feed = make_feed(owner, "f", x_cast="int")
    assert writer.write([message("feeds/f/a", '{"x": 1, "y": 1}')]) is not None
    Feed.delete().where(Feed.id == feed.id).execute()  # the axis goes with it (ON DELETE CASCADE)
    # The cached route still points at the deleted axis: the foreign key fails, the cache is
    # dropped, and the retry finds no feed.
    result = writer.write([message("feeds/f/a", '{"x": 2, "y": 2}')])
    assert result is not None and result.rejected == 1
    assert writer.stats.rejected["unknown_feed"] == 1
    assert Point.select().count() == 0


def test_retained_without_x_is_rejected_with_x_stored(writer: Writer, owner: User) -> None:
    make_feed(owner, "f")
    result = writer.write([
        message("feeds/f/a", "1.5", retain=True),
        message("feeds/f/b", '[{"y": 1}, {"x": 1416653442, "y": 2}]', retain=True),
        message("feeds/f/c", '{"x": 1416653442, "y": 3}', retain=True),
        message("feeds/f/d", "4.5"),
    ])
    assert result is not None
    assert writer.stats.rejected == {"retained_without_x": 2}
    assert sorted(point.y for point in Point.select()) == [3.0, 4.5]
