"""Viewer fixtures: the app in-process (TestClient) or on a real uvicorn, against a private Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.testclient import TestClient

from rtdp.accounts import create_token
from rtdp.credentials import hash_password
from rtdp.models import Feed, User
from rtdp.permissions import Access
from rtdp.settings import BrokerURL, HostPort, Settings
from rtdp.store import create_axis, create_feed
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto
from viewer.app import ViewerServer, build_server, create_app


@pytest.fixture
def settings(tmp_path: Path, mosquitto: Mosquitto) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        broker=BrokerURL.parse(mosquitto.url),
        http=HostPort("127.0.0.1", 0),
        http_publish_timeout=2.0,
        sse_heartbeat=0.3,
        # Most page tests register people; the closed default has tests of its own (test_registration).
        registration="open",
    )


def ready(client: TestClient) -> bool:
    return client.get("/readyz").status_code == 200


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        wait_for(lambda: ready(test_client), what="the viewer to be ready")
        yield test_client


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """The original's demo people: ep owns feed_a (int y) and feed_t (datetime x); ap owns feed_ap."""

    ep: User
    ap: User
    admin: User
    feed_a: Feed
    feed_t: Feed
    feed_ap: Feed
    ep_token: str
    ep_read_token: str
    ep_other_feed_token: str
    ap_token: str
    admin_token: str


@pytest.fixture
def world(client: TestClient) -> World:
    """Created after the app opened the database (the models are bound to it)."""
    return make_world()


@functools.cache
def _password_hash(password: str) -> str:
    return hash_password(password)


def make_user(email: str, password: str, admin: bool = False) -> User:
    """A user whose argon2 hash is computed once per run: hashing per test would dominate the suite."""
    user: User = User.create(email=email, password_hash=_password_hash(password), is_admin=admin)
    return user


def make_world() -> World:
    ep = make_user("ep@nothing.com", "1234")
    ap = make_user("ap@nothing.com", "1234")
    admin = make_user("admin@nothing.com", "secret-admin", admin=True)
    feed_a = create_feed("feed_a", ep, x_cast="int", y_cast="int")
    create_axis(feed_a, "axis_a00")
    feed_t = create_feed("feed_t", ep)
    create_axis(feed_t, "temp")
    feed_ap = create_feed("feed_ap", ap, y_cast="int")
    create_axis(feed_ap, "axis_aj_00")
    return World(
        ep=ep,
        ap=ap,
        admin=admin,
        feed_a=feed_a,
        feed_t=feed_t,
        feed_ap=feed_ap,
        ep_token=create_token(ep).token,
        ep_read_token=create_token(ep, access=Access.READ).token,
        ep_other_feed_token=create_token(ep, feed=feed_t).token,
        ap_token=create_token(ap).token,
        admin_token=create_token(admin).token,
    )


@dataclass
class Watcher:
    """A paho subscriber recording what reaches the broker."""

    client: mqtt.Client
    messages: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def payloads(self, topic: str) -> list[Any]:
        with self.lock:
            return [payload for t, payload in self.messages if t == topic]


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Iterator[Watcher]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-watcher", protocol=mqtt.MQTTv311)
    subscribed = threading.Event()
    result = Watcher(client)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with result.lock:
            result.messages.append((message.topic, json.loads(message.payload)))

    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe("feeds/#", qos=1)
    client.loop_start()
    subscribed.wait(5)
    yield result
    client.disconnect()
    client.loop_stop()


@dataclass
class LiveServer:
    url: str
    app: Starlette
    server: ViewerServer


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The app on a real uvicorn (port 0) in a thread: what SSE clients and load tests need."""
    with serving(settings) as live:
        yield live


@contextmanager
def serving(settings: Settings, **options: Any) -> Iterator[LiveServer]:
    """`create_app(settings, **options)` on a real uvicorn (port 0) in a thread, until the block ends."""
    app = create_app(settings, **options)
    server = build_server(settings, app, log_level="warning")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="the viewer to be ready")
    try:
        yield LiveServer(url, app, server)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_world(live_server: LiveServer) -> World:
    return make_world()
