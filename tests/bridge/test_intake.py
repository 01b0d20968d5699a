"""The bridge inside the embedded broker (`rtdp serve`): every permitted feeds/ publish is stored through
the broker hook, refused ones are not, notices come back over MQTT, and a stop stores what is queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from bridge.intake import Intake
from bridge.writer import Notice
from rtdp.accounts import ServiceAccount
from rtdp.models import Axis, Feed, Point
from rtdp.settings import Settings
from tests.broker.clients import connected, publish_lines
from tests.broker.conftest import PASSWORD, World, make_world
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for

BASE_X = 1.7e9


def stored(feed: str, axis: str) -> int:
    return int(Point.select().join(Axis).join(Feed).where((Feed.name == feed) & (Axis.name == axis)).count())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(env={}, data_dir=tmp_path / "data")


@pytest.fixture
def world(sqlite_db: pw.Database) -> World:
    return make_world()


@pytest.fixture
def served(world: World, settings: Settings, tmp_path: Path) -> Iterator[tuple[EmbeddedBrokerHandle, Intake]]:
    service = ServiceAccount.load_or_create(tmp_path / "data")
    intake = Intake(settings)
    try:
        with running_embedded_broker(settings, service, intake=intake.offer) as handle:
            intake.start(handle.broker.publish)
            yield handle, intake
    finally:
        intake.stop()
    assert not intake.failed.is_set()


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
    intake = Intake(settings, capacity=3)
    accepted = [intake.offer("feeds/manual_feed_a/q", json.dumps({"x": BASE_X + i, "y": i}).encode(), False, 0.0)
                for i in range(4)]
    assert accepted == [True, True, True, False]
    assert intake.dropped == 1
    notices: list[Notice] = []
    intake.start(lambda topic, payload: notices.append(Notice(topic, payload)))
    intake.stop()
    assert stored("manual_feed_a", "q") == 3
    assert sum(len(json.loads(n.payload)) for n in notices if n.topic == "rtdp/stored/manual_feed_a") == 3
