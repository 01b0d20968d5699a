from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rtdp.models import Axis, Point, Rejection, User
from tests.bridge.conftest import BridgeHarness, Publisher, make_feed
from tests.support.env import wait_for, wait_port
from tests.support.mosquitto import MOSQUITTO, Mosquitto


def test_every_payload_form_is_stored(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="float", y_cast="float")
    make_feed(owner, "t")  # datetime x: a bare value takes the delivery time
    harness.start()
    pub = harness.publisher
    pub.send("feeds/t/a", "3.25")
    pub.send("feeds/f/a", '{"x": 1, "y": 1.5}')
    pub.send("feeds/f/a", '[{"x": 2, "y": 2.5}, {"x": 3, "y": 3.5}]')
    pub.send("feeds/f/a", "4,4.5\n5,5.5\n")
    pub.send("feeds/t/a", '{"x": "2014-11-22 10:50:42.189000", "y": 7}')
    wait_for(lambda: len(harness.points("f", "a")) == 5, what="5 points on f/a")
    assert harness.points("f", "a") == [(1, 1.5), (2, 2.5), (3, 3.5), (4, 4.5), (5, 5.5)]
    wait_for(lambda: len(harness.points("t", "a")) == 2, what="2 points on t/a")
    ys = sorted(y for _, y in harness.points("t", "a"))
    assert ys == [3.25, 7.0]
    assert (1416653442.189, 7.0) in harness.points("t", "a")
    wait_for(lambda: len(harness.notices.stored("f")) == 5, what="5 stored points announced")
    flat = harness.notices.stored("f")
    assert sorted(p["x"] for p in flat) == [1, 2, 3, 4, 5]
    ids = {row.x: row.id for row in Point.select()}
    assert all(p["id"] == ids[p["x"]] and p["axis"] == "a" for p in flat)


def test_int_and_bool_feeds_publish_typed_y(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "i", x_cast="int", y_cast="int")
    make_feed(owner, "b", x_cast="int", y_cast="bool")
    harness.start()
    harness.publisher.send("feeds/i/a", '{"x": 1, "y": 3}')
    harness.publisher.send("feeds/b/door", "1,open")
    assert harness.notices.wait("rtdp/stored/i")[0][0]["y"] == 3
    assert isinstance(harness.notices.wait("rtdp/stored/i")[0][0]["y"], int)
    assert harness.notices.wait("rtdp/stored/b")[0][0]["y"] == 1


def test_batch_with_one_bad_element_is_rejected_whole(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="float")
    harness.start()
    harness.publisher.send("feeds/f/a", '[{"x": 1, "y": 1}, {"x": 2, "y": "abc"}, {"x": 3, "y": 3}]')
    error = harness.notices.wait("rtdp/errors/f/a")[0]
    assert error["index"] == 1
    assert "element 1" in error["error"]
    assert error["topic"] == "feeds/f/a"
    assert error["payload"].startswith('[{"x": 1')
    assert harness.points("f", "a") == []


# (topic, payload, errors topic, code): each rejected, nothing stored, the bridge goes on.
REJECTED = [
    ("feeds/f", "1", "rtdp/errors/f/~", "bad_topic"),
    ("feeds/f/a/b", "1", "rtdp/errors/f/~", "bad_topic"),
    ("feeds/f/bad axis!", "1", "rtdp/errors/f/~", "bad_topic"),
    ("feeds/bad feed!/a", "1", "rtdp/errors/~/~", "bad_topic"),
    ("feeds/f/a", "NaN", "rtdp/errors/f/a", "invalid"),
    ("feeds/f/a", '{"y": NaN}', "rtdp/errors/f/a", "invalid"),
    ("feeds/i/a", "3.5", "rtdp/errors/i/a", "invalid"),
    ("feeds/f/a", '{"x": "the day after tomorrow", "y": 1}', "rtdp/errors/f/a", "invalid"),
    ("feeds/b/a", "maybe", "rtdp/errors/b/a", "invalid"),
    ("feeds/f/a", "", "rtdp/errors/f/a", "invalid"),
    ("feeds/f/a", "9" * 5000, "rtdp/errors/f/a", "too_large"),
    ("feeds/f/a", '{"y": 1', "rtdp/errors/f/a", "invalid"),
    ("feeds/nosuchfeed/a", "1", "rtdp/errors/nosuchfeed/a", "unknown_feed"),
]


@pytest.mark.parametrize(("topic", "payload", "errors", "code"), REJECTED)
def test_bad_messages_are_reported_and_change_nothing(
    harness: BridgeHarness, owner: User, topic: str, payload: str, errors: str, code: str
) -> None:
    make_feed(owner, "f")
    make_feed(owner, "i", y_cast="int")
    make_feed(owner, "b", y_cast="bool")
    bridge = harness.start()
    harness.publisher.send(topic, payload)
    error = harness.notices.wait(errors)[0]
    assert error["code"] == code
    assert error["topic"] == topic
    assert len(error["payload"]) <= 200
    assert Point.select().count() == 0
    assert bridge.stats.rejected[code] == 1
    wait_for(lambda: Rejection.select().count() == 1, what="the rejection recorded")
    # Still running: a good message after the bad one is stored.
    harness.publisher.send("feeds/f/ok", "1.5")
    wait_for(lambda: harness.points("f", "ok"), what="good point after a bad one")


def test_axis_is_created_for_an_existing_feed_only(harness: BridgeHarness, owner: User) -> None:
    feed = make_feed(owner, "f")
    harness.start()
    harness.publisher.send("feeds/f/bad_axis", "not a number")
    harness.notices.wait("rtdp/errors/f/bad_axis")
    harness.publisher.send("feeds/f/new_axis", "2")
    harness.publisher.send("feeds/ghost/new_axis", "2")
    wait_for(lambda: harness.points("f", "new_axis"), what="point on the new axis")
    axis = Axis.get((Axis.feed == feed.id) & (Axis.name == "new_axis"))
    assert axis.point_count == 1 and axis.last_y == 2
    assert "no feed named 'ghost'" in harness.notices.wait("rtdp/errors/ghost/new_axis")[0]["error"]
    assert Axis.select().count() == 1


def test_same_x_replaces_so_redelivery_is_harmless(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="float")
    harness.start()
    harness.publisher.send("feeds/f/a", '{"x": 10, "y": 1}')
    first = harness.notices.wait("rtdp/stored/f")[0][0]
    harness.publisher.send("feeds/f/a", '{"x": 10, "y": 2}')
    second = harness.notices.wait("rtdp/stored/f", 2)[1][0]
    assert harness.points("f", "a") == [(10, 2)]
    assert second["id"] > first["id"]


def test_retained_message_needs_its_own_x(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f")
    # Retained before the bridge subscribes, so Mosquitto delivers them with retain=1.
    harness.publisher.send("feeds/f/no_x", "5", retain=True)
    harness.publisher.send("feeds/f/with_x", '{"x": 1416653442, "y": 6}', retain=True)
    harness.start()
    error = harness.notices.wait("rtdp/errors/f/no_x")[0]
    assert error["code"] == "retained_without_x"
    wait_for(lambda: harness.points("f", "with_x") == [(1416653442, 6)], what="retained point with x")
    # A new subscription gets the retained messages again: still one point each time.
    harness.stop()
    harness.start("another-bridge")
    harness.notices.wait("rtdp/errors/f/no_x", 2)
    harness.notices.wait("rtdp/stored/f", 2)
    assert harness.points("f", "with_x") == [(1416653442, 6)]
    assert harness.points("f", "no_x") == []


def test_messages_published_while_the_bridge_is_away_are_stored(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="int")
    harness.start()
    harness.stop()  # the persistent session stays on the broker
    for i in range(50):
        harness.publisher.send("feeds/f/a", json.dumps({"x": i, "y": i}))
    harness.start()
    wait_for(lambda: len(harness.points("f", "a")) == 50, what="50 queued points")


def test_stop_drains_and_acknowledges_what_it_stored(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="int")
    bridge = harness.start()
    for i in range(2000):
        harness.publisher.client.publish("feeds/f/a", json.dumps({"x": i, "y": i}), qos=1)
    wait_for(lambda: bridge.stats.points_stored >= 1, what="first points stored")
    harness.stop()
    before = {x for x, _ in harness.points("f", "a")}
    # Every stored point is announced, the last batch's too (its notice left before the DISCONNECT).
    wait_for(lambda: {p["x"] for p in harness.notices.stored("f")} == before, what="notices of the stored points")
    announced = len(harness.notices.stored("f"))
    harness.start()
    wait_for(lambda: len(harness.points("f", "a")) == 2000, what="all 2000 points")
    wait_for(lambda: len(harness.notices.stored("f")) >= announced + 2000 - len(before), what="notices")
    again = [p["x"] for p in harness.notices.stored("f")[announced:]]
    # Everything stored before the stop was acknowledged before disconnecting: none of it came back.
    assert not before & set(again)
    assert sorted(again) == sorted(set(range(2000)) - before)


def test_bridge_reconnects_and_resubscribes_when_the_broker_returns(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="int")
    bridge = harness.start()
    broker = harness.broker
    broker.process.terminate()
    broker.process.wait(10)
    wait_for(lambda: not bridge.ready.is_set(), what="bridge noticing the broker is gone")
    # The same port and config, no persistence: the session is gone, only resubscribing brings it back.
    assert MOSQUITTO is not None
    restarted = subprocess.Popen([MOSQUITTO, "-c", str(broker.config)], stderr=subprocess.DEVNULL)
    try:
        wait_port(broker.host, broker.port)
        wait_for(bridge.ready.is_set, timeout=30, what="bridge subscribed again")
        publisher = Publisher(broker)
        try:
            publisher.send("feeds/f/a", '{"x": 1, "y": 1}')
            wait_for(lambda: harness.points("f", "a") == [(1, 1)], what="point after the broker came back")
        finally:
            publisher.close()
        assert bridge.stats.connects >= 2
    finally:
        harness.stop()
        restarted.terminate()
        restarted.wait(10)


def test_rtdp_bridge_logs_at_its_level_and_stops_on_sigterm(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # The command itself, as an operator runs it: its own process, its own log on stderr.
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rtdp", "bridge", "--broker", mosquitto.url, "--data-dir", str(tmp_path / "data"),
             "--client-id", "cli-bridge", "--log-level", "info"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"bridge: subscribing" in log.read_bytes(), timeout=30, what="the bridge to subscribe")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log.read_text()[-3000:]
    assert "bridge: stopped" in log.read_text()


def test_notices_awaiting_the_broker_are_bounded_in_bytes(
    harness: BridgeHarness, owner: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that does not acknowledge the bridge's notices (overloaded): past MAX_NOTICE_BYTES of them
    unacknowledged, further notices are dropped (viewers read those points from the database), never held;
    every point is stored all the same, and notices flow again once the broker acknowledges."""
    import asyncio

    import bridge.service

    monkeypatch.setattr(bridge.service, "MAX_NOTICE_BYTES", 2_000)
    make_feed(owner, "f", x_cast="int")
    bridge_ = harness.start()
    waiting: list[tuple[int, asyncio.Future[None]]] = []

    def unacknowledged(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append((len(payload), future))
        return future

    monkeypatch.setattr(bridge_._client, "publish", unacknowledged)
    for first in range(0, 400, 20):  # 20 messages of 20 points, each notice ~1 kB
        points = ",".join(f'{{"x":{x},"y":{x}}}' for x in range(first, first + 20))
        harness.publisher.send("feeds/f/a", f"[{points}]")
    wait_for(lambda: len(harness.points("f", "a")) == 400, what="every point stored")
    wait_for(lambda: bridge_.stats.publish_dropped > 0, what="notices dropped")
    # One notice larger than the bound alone still goes (else nothing ever would), nothing beside it.
    assert sum(size for size, _ in waiting) <= 2_000 or len(waiting) == 1
    bridge_._thread.run(lambda: [future.set_result(None) for _, future in waiting])
    sent = len(waiting)
    harness.publisher.send("feeds/f/a", '{"x": 1000, "y": 1}')
    wait_for(lambda: len(waiting) > sent, what="a notice sent again once the broker acknowledged")
