"""The bridge inside the embedded broker (`rtdp serve`): every permitted feeds/ publish is stored through
the broker hook, refused ones are not, notices come back over MQTT, and a stop stores what is queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee as pw
import pytest

from bridge.intake import Intake
from bridge.writer import Notice
from rtdp.accounts import ServiceAccount
from rtdp.models import Axis, Feed, Point, Rejection, database_proxy
from rtdp.settings import Settings
from tests.broker.clients import connected, publish_lines
from tests.broker.conftest import PASSWORD, World, make_world, token_for
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for

BASE_X = 1.7e9
REFUSED = 0x80  # SUBACK failure


def stored(feed: str, axis: str) -> int:
    return int(Point.select().join(Axis).join(Feed).where((Feed.name == feed) & (Axis.name == axis)).count())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(env={}, data_dir=tmp_path / "data")


@pytest.fixture
def world(sqlite_db: pw.Database) -> World:
    return make_world()


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[EmbeddedBrokerHandle, Intake]]:
    service = ServiceAccount.load_or_create(settings.data_dir)
    intake = Intake(settings, database_proxy.obj)  # the database the `world` fixture opened
    try:
        with running_embedded_broker(settings, service, intake=intake.offer) as handle:
            intake.start(handle.broker.publish)
            yield handle, intake
    finally:
        intake.stop()
    assert not intake.failed.is_set()


@pytest.fixture
def served(world: World, settings: Settings) -> Iterator[tuple[EmbeddedBrokerHandle, Intake]]:
    with serving(settings) as pair:
        yield pair


def test_every_point_of_a_burst_is_stored_when_the_publisher_leaves_at_once(
    served: tuple[EmbeddedBrokerHandle, Intake],
) -> None:
    handle, intake = served
    count = 2000
    lines = [f'{{"x":{BASE_X + i},"y":{i}}}' for i in range(count)]
    publish_lines(handle.endpoint("ep@nothing.com", PASSWORD), "feeds/manual_feed_a/burst", lines)
    wait_for(lambda: stored("manual_feed_a", "burst") >= count, timeout=30, what=f"{count} points stored")
    assert stored("manual_feed_a", "burst") == count
    assert intake.dropped == 0


def test_a_refused_publish_is_not_stored_and_stored_points_are_announced(
    served: tuple[EmbeddedBrokerHandle, Intake],
) -> None:
    handle, intake = served
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep, \
            connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert ep.subscribe("rtdp/stored/manual_feed_a") == 1
        ap.publish("feeds/manual_feed_a/intruder", b"666")  # ap may not write ep's feed: PUBACKed, dropped
        ap.publish("feeds/manual_feed_aj/mine", b"1")
        ep.publish("feeds/manual_feed_a/a", json.dumps({"x": BASE_X, "y": 7}))
        # Messages are handed over in order per session: once ap's next one is stored, the refused one
        # would have been too.
        wait_for(lambda: stored("manual_feed_aj", "mine") == 1, what="ap's permitted point")
        wait_for(lambda: ep.received(), what="the stored notice")
        topic, payload = ep.received()[0]
        assert topic == "rtdp/stored/manual_feed_a"
        [point] = json.loads(payload)
        assert (point["axis"], point["x"], point["y"]) == ("a", BASE_X, 7)
    assert stored("manual_feed_a", "intruder") == 0
    assert handle.broker.access.refused_publishes == 1
    assert intake.stats.received == 2


def test_a_live_retained_publish_without_x_is_stored_once(served: tuple[EmbeddedBrokerHandle, Intake]) -> None:
    """Over a subscription a live publish arrives with retain 0 whatever the publisher set (only copies
    re-sent on subscribe carry retain 1 and need their own x): the intake stores it the same way."""
    handle, intake = served
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/kept", b"5", retain=True)
        wait_for(lambda: stored("manual_feed_a", "kept") == 1, what="the retained point")
    assert not intake.stats.rejected


def test_a_full_queue_drops_loudly_and_stop_stores_everything_queued(world: World, settings: Settings) -> None:
    intake = Intake(settings, database_proxy.obj, capacity=3)
    accepted = [intake.offer("feeds/manual_feed_a/q", json.dumps({"x": BASE_X + i, "y": i}).encode(), False, 0.0)
                for i in range(4)]
    assert accepted == [True, True, True, False]
    assert intake.dropped == 1
    notices: list[Notice] = []
    intake.start(lambda topic, payload: notices.append(Notice(topic, payload)))
    intake.stop()
    assert stored("manual_feed_a", "q") == 3
    assert sum(len(json.loads(n.payload)) for n in notices if n.topic == "rtdp/stored/manual_feed_a") == 3


# -- feeds created on first publish -------------------------------------------------------------------


def test_auto_create_makes_the_publisher_owner(served: tuple[EmbeddedBrokerHandle, Intake], world: World) -> None:
    handle, _ = served
    with connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap:
        ap.publish("feeds/ap_new_feed/temperature", json.dumps({"x": BASE_X, "y": 21.5}))
        wait_for(lambda: stored("ap_new_feed", "temperature") == 1, what="the point on the new feed")
        assert ap.subscribe("feeds/ap_new_feed/#") == 1
    feed = Feed.get(Feed.name == "ap_new_feed")
    assert feed.owner_id == world.ap.id
    assert (feed.x_cast, feed.y_cast) == ("datetime", "float")
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
        assert ep.subscribe("feeds/ap_new_feed/#") == REFUSED


def test_a_bad_payload_to_a_new_feed_creates_nothing(served: tuple[EmbeddedBrokerHandle, Intake]) -> None:
    handle, intake = served
    with connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap:
        ap.publish("feeds/ap_typo/a", b"twenty-one")
        ap.publish("feeds/manual_feed_aj/marker", b"1")
        # One publisher's messages are stored in order: once the marker is, the bad one was handled.
        wait_for(lambda: stored("manual_feed_aj", "marker") == 1, what="the marker")
    assert Feed.get_or_none(Feed.name == "ap_typo") is None
    assert intake.stats.rejected == {"invalid": 1}


def test_a_token_limited_to_one_feed_creates_no_feed(served: tuple[EmbeddedBrokerHandle, Intake], world: World) -> None:
    handle, _ = served
    with connected(handle.endpoint("device", token_for(world.ep, feed=world.ep_feed))) as device:
        device.publish("feeds/brand_new/a", b"1")
        device.publish("feeds/manual_feed_a/marker", b"1")
        wait_for(lambda: stored("manual_feed_a", "marker") == 1, what="the marker")
    assert Feed.get_or_none(Feed.name == "brand_new") is None
    assert handle.broker.access.refused_publishes == 1


def test_the_feed_quota_stops_auto_create_with_a_reason(world: World, settings: Settings) -> None:
    with serving(settings.replace(feed_quota=2)) as (handle, intake):
        with connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap:
            ap.publish("feeds/ap_second/a", b"1")  # ap owns manual_feed_aj already: this is the second
            ap.publish("feeds/ap_third/a", b"1")
            ap.publish("feeds/manual_feed_aj/marker", b"1")
            wait_for(lambda: stored("manual_feed_aj", "marker") == 1, what="the marker")
    assert stored("ap_second", "a") == 1
    assert Feed.get_or_none(Feed.name == "ap_third") is None
    assert intake.stats.rejected == {"feed_quota": 1}
    reason = Rejection.get(Rejection.feed == "ap_third").reason
    assert reason.startswith("feed quota reached: ap@nothing.com owns 2 feeds and may own 2")
