"""The bridge inside the embedded broker (`rtdp serve`): every permitted feeds/ publish is stored through
the broker hook, refused ones are not, notices come back over MQTT, and a stop stores what is queued."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import peewee as pw
import pytest

from bridge.errors import Rejected
from bridge.intake import Intake
from bridge.writer import Notice
from broker.metrics import session_counts
from rtdp.accounts import ServiceAccount
from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
from rtdp.models import Axis, Feed, Point, Rejection, database_proxy
from rtdp.settings import Settings
from tests.broker import raw
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
        with running_embedded_broker(settings, service, intake=intake) as handle:
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


def test_an_empty_retained_publish_clears_and_is_no_point(served: tuple[EmbeddedBrokerHandle, Intake]) -> None:
    """`mosquitto_pub -r -n`: MQTT's way to clear a retained message; it was reported as an empty payload."""
    handle, intake = served
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/cleared", b"", retain=True)  # acknowledged: nothing to wait for
        ep.publish("feeds/manual_feed_a/marker", b"1")
        wait_for(lambda: stored("manual_feed_a", "marker") == 1, what="the marker")
    assert not intake.stats.rejected
    assert stored("manual_feed_a", "cleared") == 0


def test_a_full_queue_holds_the_producer_and_each_message_settles_after_its_commit(
    world: World, settings: Settings
) -> None:
    intake = Intake(settings, database_proxy.obj, capacity=3)
    notices: list[Notice] = []

    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(5)]

        async def produce() -> None:  # as one session of the broker does: in order, each put awaited
            for i, settled in enumerate(futures):
                payload = json.dumps({"x": BASE_X + i, "y": i}).encode()
                await intake.put("feeds/manual_feed_a/q", payload, False, 0.0, None, settled)

        producing = asyncio.ensure_future(produce())
        while intake.full == 0:
            await asyncio.sleep(0)
        held = [intake.stats.received, *[f.done() for f in futures]]
        intake.start(lambda topic, payload: notices.append(Notice(topic, payload)))
        await producing
        await asyncio.gather(*futures)
        return held

    held = asyncio.run(main())
    intake.stop()
    # Three queued, the fourth waiting for room, and nothing settled before the writer committed.
    assert held == [3, False, False, False, False, False]
    assert stored("manual_feed_a", "q") == 5
    assert sum(len(json.loads(n.payload)) for n in notices if n.topic == "rtdp/stored/manual_feed_a") == 5


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


# -- acknowledged after the commit (issue 10), held rather than dropped (issue 11 #4) -----------------------


def test_a_point_handed_over_in_process_is_stored_as_cast_and_reaches_subscribers(
    served: tuple[EmbeddedBrokerHandle, Intake],
) -> None:
    """HTTP ingestion in rtdp serve (EmbeddedBroker.ingest): returns once committed, stores the samples the
    viewer cast (the payload is not decoded again while the casts agree), and MQTT subscribers of the
    topic and of the stored notices get what a client's publish would give them."""
    handle, intake = served
    casts = Casts()  # manual_feed_a's: datetime x, float y
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
        assert ep.subscribe("feeds/manual_feed_a/#") == 1
        assert ep.subscribe("rtdp/stored/manual_feed_a") == 1
        # A payload the codec would refuse: stored all the same, so the samples were taken as they came.
        handle.call(handle.broker.ingest("feeds/manual_feed_a/http", b"not json", casts, [Sample(BASE_X, 4.0)], 10))
        assert stored("manual_feed_a", "http") == 1  # committed when ingest returned
        wait_for(lambda: len(ep.received()) == 2, what="the point and its stored notice")
        assert ("feeds/manual_feed_a/http", b"not json") in ep.received()
    # Other casts than the feed's (it was recreated meanwhile): the payload is decoded as any message.
    other = Casts(XCast.FLOAT, YCast.INT)
    handle.call(handle.broker.ingest("feeds/manual_feed_a/http", b'{"x":1.7e9,"y":5}', other, [Sample(1.0, 9.0)], 10))
    assert Point.select().join(Axis).where(Axis.name == "http").order_by(Point.id.desc()).get().y == 5.0


def test_a_point_the_writer_refuses_in_process_raises_its_rejection(
    served: tuple[EmbeddedBrokerHandle, Intake],
) -> None:
    handle, _ = served
    with pytest.raises(Rejected) as refused:  # no such feed, and nobody to create it for
        handle.call(handle.broker.ingest("feeds/nowhere/a", b"1", Casts(), [Sample(BASE_X, 1.0)], 10))
    assert refused.value.code == "unknown_feed"
    assert Rejection.select().count() == 1


@contextmanager
def write_locked(db: pw.Database) -> Iterator[None]:
    """Another connection holds SQLite's write lock: the writer's commits fail (after busy_timeout) and retry."""
    locker = sqlite3.connect(db.database, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        yield
        locker.execute("ROLLBACK")
    finally:
        locker.close()


class Acks:
    """A paho client's PUBACKs, by message id (paho calls on_publish from its network thread)."""

    def __init__(self, client: mqtt.Client) -> None:
        self.mids: set[int] = set()
        self._lock = threading.Lock()
        client.on_publish = self._on_publish

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        with self._lock:
            self.mids.add(mid)

    def count(self) -> int:
        with self._lock:
            return len(self.mids)


@pytest.mark.parametrize("qos", [1, 2])
def test_a_publish_is_acknowledged_only_once_its_point_committed(
    served: tuple[EmbeddedBrokerHandle, Intake], sqlite_db: pw.Database, qos: int
) -> None:
    handle, intake = served
    with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
        with write_locked(sqlite_db):
            info = ep.client.publish("feeds/manual_feed_a/held", json.dumps({"x": BASE_X, "y": 1}), qos=qos)
            # Refused (ap's feed), so nothing to store, but acknowledged in order: after the first one.
            after = ep.client.publish("feeds/manual_feed_aj/not_mine", b"1", qos=qos)
            wait_for(lambda: handle.broker.access.refused_publishes == 1, what="the second publish handled")
            wait_for(lambda: intake.stats.db_failures >= 1, timeout=30, what="a commit refused by the lock")
            # The writer had the message and could not commit it: no PUBACK (QoS 2: PUBREC) may have been sent.
            assert not info.is_published()
            assert not after.is_published()
            assert stored("manual_feed_a", "held") == 0
        info.wait_for_publish(30)
        after.wait_for_publish(30)
        assert info.is_published() and after.is_published()
        assert stored("manual_feed_a", "held") == 1


def test_a_full_intake_holds_its_publishers_and_drops_nothing(
    world: World, settings: Settings, sqlite_db: pw.Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stalls under a QoS 1 publisher with an in-flight window of 100 and a QoS 0 flood: the
    intake fills, the broker stops reading from both and acknowledges nothing; once the database is
    back, everything acknowledged (and everything sent at QoS 0) is stored."""
    count = 200
    service = ServiceAccount.load_or_create(settings.data_dir)
    intake = Intake(settings, sqlite_db, capacity=3)
    try:
        with running_embedded_broker(settings.replace(mqtt_inflight=5), service, intake=intake) as handle:
            intake.start(handle.broker.publish)
            endpoint = handle.endpoint("ep@nothing.com", PASSWORD)
            with connected(endpoint) as qos1, connected(endpoint) as qos0:
                acks = Acks(qos1.client)
                with write_locked(sqlite_db):
                    for i in range(count):
                        qos1.client.publish("feeds/manual_feed_a/one", json.dumps({"x": BASE_X + i, "y": i}), qos=1)
                        qos0.client.publish("feeds/manual_feed_a/zero", json.dumps({"x": BASE_X + i, "y": i}), qos=0)
                    wait_for(lambda: intake.full >= 1, what="the intake to fill")
                    wait_for(lambda: session_counts(handle.broker).held == 2, what="both clients held")
                    assert session_counts(handle.broker).unsettled >= 2 * 5
                    assert acks.count() == 0
                    # At most the queue's 3 and the batch the writer took before the lock stopped it.
                    assert intake.stats.received <= 3 + 3
                wait_for(lambda: acks.count() == count, timeout=60, what="every PUBACK")
                wait_for(lambda: stored("manual_feed_a", "zero") == count, timeout=60, what="every QoS 0 point")
                assert stored("manual_feed_a", "one") == count
    finally:
        intake.stop()
    # Logged as a summary with a count, never once per message or with a traceback.
    full = [r.getMessage() for r in caplog.records if "intake queue full" in r.getMessage()]
    assert 1 <= len(full) < 10 and "waits so far" in full[0], full
    assert not [r for r in caplog.records if r.exc_info]


def test_a_qos2_publish_sent_again_before_its_pubrel_is_stored_once(
    served: tuple[EmbeddedBrokerHandle, Intake],
) -> None:
    """MQTT 3.1.1 section 4.3.3: until PUBREL, a resend of the packet id (DUP) is acknowledged again, not
    delivered again. A point without x would otherwise be stored twice (at two arrival times)."""
    handle, _ = served
    with raw.open_socket(handle.host, handle.port) as sock:
        sock.sendall(raw.connect("ep@nothing.com", PASSWORD, client_id="qos2-raw"))
        assert raw.read_exactly(sock, 4) == b"\x20\x02\x00\x00"
        publish = raw.publish("feeds/manual_feed_a/exactly_once", b"42", qos=2, packet_id=7)
        sock.sendall(publish)
        assert raw.read_exactly(sock, 4) == b"\x50\x02\x00\x07"  # PUBREC, once stored
        sock.sendall(bytes([publish[0] | 0x08]) + publish[1:])  # the same again, DUP set
        assert raw.read_exactly(sock, 4) == b"\x50\x02\x00\x07"
        sock.sendall(b"\x62\x02\x00\x07")  # PUBREL
        assert raw.read_exactly(sock, 4) == b"\x70\x02\x00\x07"  # PUBCOMP
        # A QoS 1 marker: stored in order after anything this connection sent before, then acknowledged.
        sock.sendall(raw.publish("feeds/manual_feed_a/marker", b"1", qos=1, packet_id=8))
        assert raw.read_exactly(sock, 4) == b"\x40\x02\x00\x08"
    assert stored("manual_feed_a", "exactly_once") == 1
