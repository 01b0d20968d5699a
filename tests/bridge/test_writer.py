"""The batching writer without MQTT: routes, caches, rejections, and what a failed commit does."""

from __future__ import annotations

import json
import time

import peewee as pw
import pytest

import bridge.writer as writer_module
from bridge.stats import Stats
from bridge.writer import Incoming, Writer
from rtdp.models import Axis, Feed, Point, Rejection, Share, User
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


def test_stored_notices_list_each_feeds_points_in_id_order(writer: Writer, owner: User) -> None:
    make_feed(owner, "f", x_cast="float")
    make_feed(owner, "g", x_cast="int", y_cast="int")
    result = writer.write([
        message("feeds/f/a", '[{"x": 1, "y": 1.5}, {"x": 2.25, "y": -2}]'),
        message("feeds/g/c", '{"x": 7, "y": 70}'),
        message("feeds/f/b", '{"x": 1, "y": 3}'),
        message("feeds/f/a", '{"x": 3, "y": 1e300}'),
    ])
    assert result is not None
    notices = {n.topic: json.loads(n.payload) for n in result.notices}
    assert set(notices) == {"rtdp/stored/f", "rtdp/stored/g"}
    points = {(p.axis.name, p.x): p.id for p in Point.select()}
    assert notices["rtdp/stored/f"] == [
        {"id": points["a", 1.0], "axis": "a", "x": 1.0, "y": 1.5},
        {"id": points["a", 2.25], "axis": "a", "x": 2.25, "y": -2.0},
        {"id": points["b", 1.0], "axis": "b", "x": 1.0, "y": 3.0},
        {"id": points["a", 3.0], "axis": "a", "x": 3.0, "y": 1e300},
    ]
    assert [p["id"] for p in notices["rtdp/stored/f"]] == sorted(points[k] for k in points if k[0] in "ab")
    # An int feed's y is a JSON integer; one axis alone (the comprehension) gives the same form.
    (g,) = notices["rtdp/stored/g"]
    assert g == {"id": points["c", 7.0], "axis": "c", "x": 7.0, "y": 70} and isinstance(g["y"], int)
    single = writer.write([message("feeds/g/c", '[{"x": 8, "y": 80}, {"x": 9, "y": -1}]')])
    assert single is not None
    (notice,) = single.notices
    ids = [p.id for p in Point.select().order_by(Point.id)][-2:]
    # The first point also says which of g's points it follows (the one stored before: viewer/order.py).
    before = points["c", 7.0]
    assert notice.payload == (
        f'[{{"id":{ids[0]},"axis":"c","x":8.0,"y":80,"after":{before}}},{{"id":{ids[1]},"axis":"c","x":9.0,"y":-1}}]'
    ).encode()


# -- feeds created on first publish (the embedded broker's intake names the creator) ----------------------


def created(topic: str, payload: str, creator: int) -> Incoming:
    return Incoming(topic, payload.encode(), 0, 0, False, time.time(), 0, creator)


def test_a_creator_gets_the_new_feed_once_a_payload_decoded(writer: Writer, owner: User) -> None:
    result = writer.write([created("feeds/new/a", "oops", owner.id)])
    assert result is not None and result.rejected == 1
    assert Feed.get_or_none(Feed.name == "new") is None  # a bad payload leaves no empty feed
    result = writer.write([created("feeds/new/a", "1.5", owner.id), created("feeds/new/b", "2", owner.id)])
    assert result is not None and result.stored_points == 2
    feed = Feed.get(Feed.name == "new")
    assert feed.owner_id == owner.id and (feed.x_cast, feed.y_cast) == ("datetime", "float")


def test_without_a_creator_an_unknown_feed_is_rejected(writer: Writer, owner: User) -> None:
    result = writer.write([message("feeds/nobody_knows/a", "1")])
    assert result is not None and writer.stats.rejected == {"unknown_feed": 1}
    assert Feed.get_or_none(Feed.name == "nobody_knows") is None


def test_a_creator_beaten_to_a_feed_needs_write_access(writer: Writer, owner: User) -> None:
    """Two users' publishes were both let through while the feed did not exist: the first creates it, the
    second is then an ordinary publisher to someone else's feed."""
    other = User.create(email="other@example.com", password_hash="-")
    result = writer.write([
        created("feeds/contested/a", "1", owner.id),
        created("feeds/contested/a", "2", other.id),
        created("feeds/contested/b", "3", other.id),
    ])
    assert result is not None and (result.stored_points, result.rejected) == (1, 2)
    assert writer.stats.rejected == {"forbidden": 2}
    assert Feed.get(Feed.name == "contested").owner_id == owner.id
    Share.create(feed=Feed.get(Feed.name == "contested"), user=other, access="write")
    result = writer.write([created("feeds/contested/a", "4", other.id)])
    assert result is not None and result.stored_points == 1


def test_the_feed_quota_limits_what_a_creator_makes(any_db: pw.Database, owner: User) -> None:
    writer = Writer(any_db, Settings.build(env={}, feed_quota=2), Stats())
    make_feed(owner, "mine")
    result = writer.write([created(f"feeds/q{n}/a", "1", owner.id) for n in range(3)])
    assert result is not None and (result.stored_points, result.rejected) == (1, 2)
    assert writer.stats.rejected == {"feed_quota": 2}
    assert Feed.select().where(Feed.owner == owner.id).count() == 2
    [reason] = {row.reason for row in Rejection.select()}
    assert reason.startswith("feed quota reached: owner@example.com owns 2 feeds and may own 2")
    User.update(is_admin=True).where(User.id == owner.id).execute()  # admins have no quota
    result = writer.write([created("feeds/q9/a", "1", owner.id)])
    assert result is not None and result.stored_points == 1


def test_the_axis_quota_limits_the_axes_a_feed_gets(any_db: pw.Database, owner: User) -> None:
    writer = Writer(any_db, Settings.build(env={}, axis_quota=2), Stats())
    make_feed(owner, "wide")
    result = writer.write([message(f"feeds/wide/a{n}", "1") for n in range(4)])
    assert result is not None and (result.stored_points, result.rejected) == (2, 2)
    assert writer.stats.rejected == {"axis_quota": 2}
    result = writer.write([message("feeds/wide/a0", "2")])  # the axes it has still take points
    assert result is not None and result.stored_points == 1


@pytest.mark.parametrize("y_cast", ["float", "int"])
def test_one_notice_per_feed_names_each_points_axis_in_id_order(writer: Writer, owner: User, y_cast: str) -> None:
    make_feed(owner, "f", x_cast="int", y_cast=y_cast)
    batch = [message(f"feeds/f/{axis}", json.dumps({"x": i, "y": i})) for i in range(6) for axis in ("a", "b")]
    result = writer.write(batch)
    assert result is not None and [n.topic for n in result.notices] == ["rtdp/stored/f"]
    points = json.loads(result.notices[0].payload)
    assert [(p["axis"], p["x"], p["y"]) for p in points] == [(axis, i, i) for i in range(6) for axis in ("a", "b")]
    assert [type(p["y"]) for p in points] == [float if y_cast == "float" else int] * 12
    assert [p["id"] for p in points] == sorted(p["id"] for p in points)
    stored = {(p.axis.name, p.x): p.id for p in Point.select()}
    assert all(stored[(p["axis"], p["x"])] == p["id"] for p in points)


def test_auto_create_off_holds_for_axes_over_mqtt_as_over_http(any_db: pw.Database, owner: User) -> None:
    """One rule (rtdp.catalog): with auto-create off a new axis is refused here too, as the viewer does."""
    writer = Writer(any_db, Settings.build(env={}, auto_create=False), Stats())
    make_feed(owner, "f")
    result = writer.write([message("feeds/f/new_axis", "1"), message("feeds/nobody_knows/a", "1")])
    assert result is not None and result.rejected == 2
    assert writer.stats.rejected == {"not_found": 1, "unknown_feed": 1}
    [notice] = [n for n in result.notices if n.topic == "rtdp/errors/f/new_axis"]
    assert json.loads(notice.payload)["error"] == "feed 'f' has no axis 'new_axis' (auto-create is off)"
    assert "axis" not in json.loads(notice.payload)  # the topic names it
    assert not Axis.select().where(Axis.name == "new_axis").exists()
