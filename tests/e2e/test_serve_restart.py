"""Issue 10 item 6: `rtdp serve` keeps its persistent sessions (subscriptions, queued QoS 1 messages) and
retained messages in the database: they survive SIGTERM and a start, and kill -9 for what the broker had
acknowledged; session expiry, the queue limit and a deleted feed still take them away."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtdp.mqtt import Endpoint
from tests.broker.clients import TestClient, close, connected, open_client
from tests.e2e.test_serve_kill import Serve
from tests.support.env import wait_for

FEED = "manual_feed_a"  # the demo's, owned by ep
TOPIC = f"feeds/{FEED}/temp"
SUBSCRIBER = "restart-subscriber"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    served = Serve(tmp_path / "data")
    served.start()
    try:
        yield served
    finally:
        assert served.stop() == 0, served.log.read_text()[-3000:]


def endpoint(serve: Serve) -> Endpoint:
    return Endpoint("127.0.0.1", serve.mqtt_port, "ep@nothing.com", "1234")


def db_rows(serve: Serve, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(serve.data_dir / "rtdp.sqlite3") as conn:
        return conn.execute(sql).fetchall()


def persistent(serve: Serve, client_id: str = SUBSCRIBER) -> TestClient:
    client = open_client(endpoint(serve), client_id, clean_session=False)
    assert client.connack is not None and not client.connack.is_failure
    return client


def subscribe_and_leave(serve: Serve, topic: str = TOPIC) -> None:
    """A persistent subscriber subscribes at QoS 1 and goes offline."""
    client = persistent(serve)
    assert client.subscribe(topic, 1) == 1
    close(client)
    saved = "SELECT 1 FROM broker_session WHERE disconnected IS NOT NULL"
    wait_for(lambda: db_rows(serve, saved), what="the session saved offline")


def publish(serve: Serve, values: range, topic: str = TOPIC) -> None:
    with connected(endpoint(serve)) as publisher:
        for value in values:
            publisher.publish(topic, json.dumps({"x": 1.7e9 + value, "y": value}))  # waits for the PUBACK


def ys(client: TestClient) -> list[int]:
    return [json.loads(payload)["y"] for topic, payload in client.received() if topic == TOPIC]


def check_queued_and_retained_survive(serve: Serve, restart: str) -> None:
    subscribe_and_leave(serve)
    publish(serve, range(5))  # queued for the offline subscriber, each acknowledged
    with connected(endpoint(serve)) as publisher:
        publisher.publish(f"feeds/{FEED}/level", b"42", retain=True)
    if restart == "kill":
        serve.kill()  # right after the last PUBACK: only what was committed can come back
    else:
        assert serve.stop() == 0
    serve.start()
    client = persistent(serve)
    try:
        assert client.session_present
        wait_for(lambda: len(ys(client)) >= 5, what="the queued messages")
        assert ys(client) == [0, 1, 2, 3, 4]
        assert all(message.qos == 1 for message in client.full)
        # The subscription came back too: a new message reaches it at once.
        publish(serve, range(5, 6))
        wait_for(lambda: ys(client) == [0, 1, 2, 3, 4, 5], what="a message on the restored subscription")
    finally:
        close(client)
    with connected(endpoint(serve)) as reader:
        reader.subscribe(f"feeds/{FEED}/level")
        reader.wait_message(f"feeds/{FEED}/level", b"42")
        assert reader.messages[0][2], "delivered as a retained message"


def test_queued_messages_and_retained_messages_survive_sigterm_and_start(serve: Serve) -> None:
    check_queued_and_retained_survive(serve, "term")


def test_what_was_acknowledged_survives_kill_9(serve: Serve) -> None:
    check_queued_and_retained_survive(serve, "kill")


def test_sessions_saved_expire_at_the_start_or_later(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    subscribe_and_leave(serve)
    publish(serve, range(3))
    with connected(endpoint(serve), "soon-expired", clean_session=False) as other:
        other.subscribe(TOPIC, 1)
    assert serve.stop() == 0
    monkeypatch.setenv("RTDP_SESSION_EXPIRY", "60")
    now = time.time()
    with sqlite3.connect(serve.data_dir / "rtdp.sqlite3") as conn:
        # One session offline for longer than the expiry, one that reaches it a few seconds after the start.
        update = "UPDATE broker_session SET disconnected = ? WHERE client_id LIKE ?"
        conn.execute(update, (now - 3600, "%/" + SUBSCRIBER))
        conn.execute(update, (now - 48, "%/soon-expired"))  # the start takes a few seconds under load
    serve.start()
    left = db_rows(serve, "SELECT client_id FROM broker_session")
    assert [str(row[0]).rsplit("/", 1)[1] for row in left] == ["soon-expired"]
    assert db_rows(serve, "SELECT COUNT(*) FROM broker_message")[0][0] == 0  # soon-expired had nothing queued
    wait_for(lambda: not db_rows(serve, "SELECT client_id FROM broker_session"), timeout=40, what="expiry")
    client = persistent(serve)
    try:
        assert not client.session_present
    finally:
        close(client)


def test_the_queue_limit_holds_across_a_restart(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve.stop() == 0
    monkeypatch.setenv("RTDP_SESSION_QUEUE", "3")
    serve.start()
    subscribe_and_leave(serve)
    publish(serve, range(10))
    waiting = "SELECT COUNT(*) FROM broker_message JOIN broker_session ON broker_message.id >= broker_session.floor"
    # Saved as each message once and the session's floor (raised within a second).
    wait_for(lambda: db_rows(serve, waiting)[0][0] == 3, what="the newest three saved as queued")
    assert serve.stop() == 0
    serve.start()
    client = persistent(serve)
    try:
        wait_for(lambda: len(ys(client)) >= 3, what="the queued messages")
        publish(serve, range(10, 11))
        wait_for(lambda: 10 in ys(client), what="a new message")
        assert ys(client) == [7, 8, 9, 10]  # the newest three, then the new one
    finally:
        close(client)


def test_a_deleted_feeds_retained_message_does_not_come_back(serve: Serve) -> None:
    import httpx

    with connected(endpoint(serve)) as publisher:
        publisher.publish(f"feeds/{FEED}/level", b"1", retain=True)
        publisher.publish("feeds/manual_feed_b/level", b"2", retain=True)
    deleted = httpx.delete(
        f"http://127.0.0.1:{serve.http_port}/api/v1/feeds/{FEED}", auth=("ep@nothing.com", "1234"), timeout=10
    )
    assert deleted.status_code == 204, deleted.text
    assert serve.stop() == 0
    serve.start()
    assert [row[0] for row in db_rows(serve, "SELECT topic FROM retained_message")] == ["feeds/manual_feed_b/level"]
    publish(serve, range(1))  # the feed's name is taken again (auto-created by its publisher)
    with connected(endpoint(serve)) as reader:
        reader.subscribe("feeds/+/level")
        reader.wait_message("feeds/manual_feed_b/level", b"2")  # sent on subscribe, with any other one
        assert reader.received() == [("feeds/manual_feed_b/level", b"2")]


def test_a_json_array_without_x_is_refused_over_mqtt_as_over_http(serve: Serve) -> None:
    """Issue 11 #12 over MQTT: the points all got the same time and one was stored; now the same error as
    the HTTP batch API's."""
    with connected(endpoint(serve)) as client:
        client.subscribe(f"rtdp/errors/{FEED}/#")
        client.publish(f"feeds/{FEED}/burst", json.dumps([{"y": value} for value in range(100)]))
        wait_for(lambda: client.received(), what="the error notice")
    topic, payload = client.received()[0]
    assert topic == f"rtdp/errors/{FEED}/burst"
    assert "element 1: same x as element 0; give each point its own x" in payload.decode()
    assert not db_rows(serve, "SELECT 1 FROM axis WHERE name = 'burst'") or not db_rows(
        serve, "SELECT 1 FROM point p JOIN axis a ON p.axis_id = a.id WHERE a.name = 'burst'"
    )
