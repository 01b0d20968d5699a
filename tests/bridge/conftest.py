from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import peewee as pw
import pytest

from bridge.service import Bridge
from rtdp.models import Axis, Feed, Point, User
from rtdp.mqtt import Endpoint, make_client
from rtdp.settings import BrokerURL, Settings
from rtdp.store import create_feed
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto


def endpoint_of(broker: Mosquitto) -> Endpoint:
    return Endpoint.of(BrokerURL.parse(broker.url))


@dataclass
class Notices:
    """Everything published under rtdp/# (stored and errors topics), as parsed JSON."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, json.loads(payload)))

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [body for t, body in self.messages if t == topic]

    def wait(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        def enough() -> list[Any]:
            found = self.on(topic)
            return found if len(found) >= count else []

        return wait_for(enough, timeout, what=topic)

    def stored(self, feed: str) -> list[dict[str, Any]]:
        """Every point announced on rtdp/stored/<feed>, flattened."""
        return [point for message in self.on(f"rtdp/stored/{feed}") for point in message]

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]


class Publisher:
    def __init__(self, broker: Mosquitto) -> None:
        self.client = make_client(endpoint_of(broker), f"pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return User.create(email="owner@example.com", password_hash="-")


@pytest.fixture
def bridge_settings(mosquitto: Mosquitto) -> Settings:
    return Settings.build(env={}, broker=mosquitto.url, max_payload=4096)


@dataclass
class BridgeHarness:
    broker: Mosquitto
    settings: Settings
    db: pw.Database
    notices: Notices
    publisher: Publisher
    bridge: Bridge | None = None

    def start(self, client_id: str = "test-bridge") -> Bridge:
        self.bridge = Bridge(self.settings, endpoint_of(self.broker), client_id, self.db)
        self.bridge.start()
        wait_for(self.bridge.ready.is_set, 10, what="bridge subscribed")
        return self.bridge

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop(timeout=10)
            self.bridge = None

    def points(self, feed: str, axis: str) -> list[tuple[float, float]]:
        query = (
            Point.select(Point.x, Point.y)
            .join(Axis)
            .join(Feed)
            .where((Feed.name == feed) & (Axis.name == axis))
            .order_by(Point.x)
        )
        rows: list[Any] = list(query.tuples())
        return [(row[0], row[1]) for row in rows]


@pytest.fixture
def harness(mosquitto: Mosquitto, bridge_settings: Settings, any_db: pw.Database) -> Iterator[BridgeHarness]:
    notices = Notices()
    listener = make_client(endpoint_of(mosquitto), f"listen-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    listener.on_message = lambda c, u, m: notices.add(m.topic, bytes(m.payload))
    listener.on_subscribe = lambda *args: subscribed.set()
    listener.connect(mosquitto.host, mosquitto.port)
    listener.subscribe("rtdp/#", qos=1)
    listener.loop_start()
    wait_for(subscribed.is_set, 10, what="listener subscribed")
    publisher = Publisher(mosquitto)
    h = BridgeHarness(mosquitto, bridge_settings, any_db, notices, publisher)
    try:
        yield h
    finally:
        h.stop()
        publisher.close()
        listener.disconnect()
        listener.loop_stop()


def make_feed(owner: User, name: str = "f", x_cast: str = "datetime", y_cast: str = "float") -> Feed:
    return create_feed(name, owner, x_cast=x_cast, y_cast=y_cast)
