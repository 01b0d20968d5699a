from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import paho.mqtt.client as mqtt
import peewee as pw
import pytest

from emulator import run
from emulator.errors import EmulatorError
from emulator.runner import Emulator
from emulator.sources import DoorSource, RandomWalkSource, SineSource
from rtdp.accounts import ServiceAccount, create_user
from rtdp.codec import Sample, decode, sample_from_fields
from rtdp.errors import NotFound
from rtdp.models import Axis, EmulatorState, Token, User, database_proxy
from rtdp.mqtt import Endpoint, make_client
from rtdp.settings import Settings
from rtdp.store import feed_casts, get_axis, get_feed
from tests.emulator.recorder import recording_server
from tests.emulator.viewer_server import running_viewer
from tests.support.embedded import running_embedded_broker
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto

OWNER = "emu@example.com"
SINE_FEED = "sin_wave_over_time_in_seconds"


class Subscriber:
    """A paho client on `feeds/#` that keeps (topic, payload) in arrival order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = make_client(Endpoint(broker.host, broker.port), f"test-sub-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("feeds/#", qos=1)
        self.client.on_subscribe = lambda c, u, m, r, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto)
    yield sub
    sub.close()


def opened() -> pw.Database:
    """The database the test's fixture opened (any_db or sqlite_db): the one the models are bound to."""
    return database_proxy.obj


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return create_user(OWNER, "secret-password")


def settings_for(tmp_path: Path, broker: Mosquitto | None = None) -> Settings:
    return Settings.build(env={}, data_dir=tmp_path, broker=broker.url if broker else None)


def has_at_least(subscriber: Subscriber, topic: str, count: int) -> bool:
    return len(subscriber.on(topic)) >= count


def decoded(payload: bytes, feed: str) -> Sample:
    (sample,) = decode(payload, feed_casts(get_feed(feed)), now=time.time(), tz=Settings().tz)
    return sample


def test_mqtt_readings_reach_the_broker_and_decode_under_the_feed_casts(
    tmp_path: Path, owner: User, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    sources = [
        SineSource(interval=0.02, step=0.5),
        DoorSource(seed=1, interval=0.02, min_dwell=0.0, max_dwell=0.05),
        RandomWalkSource(seed=2, interval=0.02),
    ]
    started = time.time()
    with Emulator(settings_for(tmp_path, mosquitto), opened(), owner_email=OWNER, sources=sources) as emulator:
        for topic in (f"feeds/{SINE_FEED}/axis_at_90_degrees", "feeds/front_door/state", "feeds/temperature/celsius"):
            wait_for(partial(has_at_least, subscriber, topic, 5), what=f"5 messages on {topic}")
        token_row = Token.get(Token.user == owner.id)
        assert not token_row.revoked
    assert Token.get_by_id(token_row.id).revoked, "the token the emulator created is revoked when it stops"
    assert emulator.failed == {"sine": 0, "door": 0, "random_walk": 0}

    sine = get_feed(SINE_FEED)
    assert (sine.owner.id, sine.x_cast, sine.y_cast) == (owner.id, "datetime", "float")
    assert {a.name for a in Axis.select().where(Axis.feed == sine.id)} == set(SineSource.PHASES)
    assert get_feed("front_door").y_cast == "bool"
    for axis, phase in SineSource.PHASES.items():
        samples = [decoded(p, SINE_FEED) for p in subscriber.on(f"feeds/{SINE_FEED}/{axis}")]
        assert [s.y for s in samples[:5]] == pytest.approx([math.sin(0.5 * k + phase) for k in range(5)])
        assert all(started - 1 <= s.x <= time.time() + 1 for s in samples)
    doors = [decoded(p, "front_door").y for p in subscriber.on("feeds/front_door/state")]
    assert set(doors) <= {0.0, 1.0} and len(set(doors)) == 2
    temperatures = [decoded(p, "temperature").y for p in subscriber.on("feeds/temperature/celsius")]
    assert all(-10 <= t <= 45 for t in temperatures)


def test_sine_phase_continues_across_a_restart(
    tmp_path: Path, owner: User, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    settings = settings_for(tmp_path, mosquitto)
    topic = f"feeds/{SINE_FEED}/axis_at_0_degrees"
    with Emulator(settings, opened(), owner_email=OWNER, sources=[SineSource(interval=0.02, step=0.25)]):
        wait_for(lambda: len(subscriber.on(topic)) >= 4, what="first run")
    first_run = len(subscriber.on(topic))
    saved = EmulatorState.get_by_id("sine")
    assert saved.enabled
    assert "token" not in saved.state.lower()
    with Emulator(settings, opened(), owner_email=OWNER, sources=[SineSource(interval=0.02, step=0.25)]):
        wait_for(lambda: len(subscriber.on(topic)) >= first_run + 4, what="second run")
    ys = [decoded(p, SINE_FEED).y for p in subscriber.on(topic)]
    # One unbroken wave: the second run started where the first stopped.
    assert ys == pytest.approx([math.sin(math.fmod(0.25 * k, 2 * math.pi)) for k in range(len(ys))])


def test_disabled_source_idles_and_switching_takes_effect_live(
    tmp_path: Path, owner: User, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    sources = [SineSource(interval=0.02), RandomWalkSource(seed=1, interval=0.02)]
    settings = settings_for(tmp_path, mosquitto)
    emulator = Emulator(settings, opened(), owner_email=OWNER, sources=sources, poll_interval=0.05)
    emulator.set_enabled("random_walk", False)
    with emulator:
        wait_for(lambda: emulator.steps["sine"] >= 30, what="sine steps while random_walk is off")
        assert emulator.steps["random_walk"] == 0
        emulator.set_enabled("random_walk", True)
        wait_for(lambda: len(subscriber.on("feeds/temperature/celsius")) >= 3, what="random_walk switched on")
        emulator.set_enabled("sine", False)
        # Once random_walk has stepped through several polls, the switch has been seen: sine must be still.
        mark = emulator.steps["random_walk"]
        wait_for(lambda: emulator.steps["random_walk"] >= mark + 15, what="polls after switching sine off")
        frozen = emulator.steps["sine"]
        mark = emulator.steps["random_walk"]
        wait_for(lambda: emulator.steps["random_walk"] >= mark + 15, what="more random_walk steps")
        assert emulator.steps["sine"] == frozen
    assert not EmulatorState.get_by_id("sine").enabled
    assert EmulatorState.get_by_id("random_walk").enabled


def test_http_path_sends_the_original_url_with_a_bearer_token(tmp_path: Path, owner: User) -> None:
    with recording_server() as server:
        sources = [SineSource(interval=0.02, step=0.5), DoorSource(seed=3, interval=0.02, min_dwell=0, max_dwell=0.05)]
        with Emulator(
            settings_for(tmp_path), opened(), owner_email=OWNER, sources=sources, via="http", token="given-token",
            http_url=server.url,
        ) as emulator:
            wait_for(lambda: len(server.requests) >= 12, what="12 HTTP requests")
        assert Token.select().count() == 0, "a token passed in is used, none is created"
        assert emulator.failed == {"sine": 0, "door": 0}
        requests = list(server.requests)
    sine = get_feed(SINE_FEED)
    zero = [r for r in requests if r.path == f"/service/feed_input.json/{SINE_FEED}/axis_at_0_degrees"]
    assert len(zero) >= 3
    for request in requests:
        assert request.method == "GET"
        assert request.headers["Authorization"] == "Bearer given-token"
        feed_name = unquote(request.path).split("/")[3]
        sample_from_fields(request.query["x"], request.query["y"], feed_casts(get_feed(feed_name)),
                           now=time.time(), tz=Settings().tz)
    ys = [sample_from_fields(r.query["x"], r.query["y"], feed_casts(sine), now=0, tz=Settings().tz).y for r in zero]
    assert ys[:3] == pytest.approx([0.0, math.sin(0.5), math.sin(1.0)])
    assert {r.query["y"] for r in requests if "front_door" in r.path} <= {"true", "false"}


def test_http_errors_are_counted_and_do_not_stop_the_runner(tmp_path: Path, owner: User) -> None:
    with recording_server() as server:
        server.status = 503
        with Emulator(
            settings_for(tmp_path), opened(), owner_email=OWNER, sources=[SineSource(interval=0.02)], via="http",
            http_url=server.url,
        ) as emulator:
            wait_for(lambda: emulator.failed["sine"] >= 6, what="refused requests")
            server.status = 200
            wait_for(lambda: emulator.published["sine"] >= 6, what="accepted requests after recovery")
        token = server.requests[0].headers["Authorization"].removeprefix("Bearer ")
    assert Token.get(Token.prefix == token[:12]).revoked


def test_missing_owner_is_a_clear_error(tmp_path: Path, any_db: pw.Database) -> None:
    emulator = Emulator(settings_for(tmp_path), opened(), owner_email="nobody@example.com", sources=["sine"])
    with pytest.raises(EmulatorError, match="does not exist"):
        emulator.start()
    with pytest.raises(NotFound, match="unknown emulator source"):
        Emulator(settings_for(tmp_path), opened(), owner_email=OWNER, sources=["sine", "bogus"])


def test_existing_feed_and_axes_are_reused(tmp_path: Path, owner: User) -> None:
    with recording_server() as server:
        settings = settings_for(tmp_path)
        first = Emulator(settings, opened(), owner_email=OWNER, sources=["sine"], via="http", http_url=server.url)
        first.start()
        first.stop()
        axis_id = get_axis(get_feed(SINE_FEED), "axis_at_0_degrees").id
        with Emulator(settings, opened(), owner_email=OWNER, sources=["sine"], via="http", http_url=server.url):
            pass
    assert get_axis(get_feed(SINE_FEED), "axis_at_0_degrees").id == axis_id


def test_run_blocks_until_stopped(tmp_path: Path, sqlite_db: pw.Database) -> None:
    create_user(OWNER, "pw")
    settings = Settings.build(env={}, data_dir=tmp_path)  # the same SQLite file as the fixture's
    stop = threading.Event()
    with recording_server() as server:
        thread = threading.Thread(
            target=run,
            args=(settings, ["random_walk"], "http"),
            kwargs={"owner_email": OWNER, "http_url": server.url, "stop_event": stop},
        )
        thread.start()
        wait_for(lambda: len(server.requests) >= 1, what="the first request")
        assert thread.is_alive()
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    assert server.requests[0].path == "/service/feed_input.json/temperature/celsius"


def test_http_path_end_to_end_through_the_viewer(tmp_path: Path, sqlite_db: pw.Database, mosquitto: Mosquitto) -> None:
    owner = create_user(OWNER, "pw")
    settings = Settings.build(env={}, data_dir=tmp_path, broker=mosquitto.url)
    subscriber = Subscriber(mosquitto)
    try:
        with running_viewer(settings) as url:
            door = DoorSource(seed=4, interval=0.02, min_dwell=0, max_dwell=0.05)
            sources = [SineSource(interval=0.02, step=0.5), door]
            with Emulator(settings, opened(), owner_email=OWNER, sources=sources, via="http", http_url=url) as emulator:
                wait_for(lambda: len(subscriber.on(f"feeds/{SINE_FEED}/axis_at_45_degrees")) >= 4, what="sine")
                wait_for(lambda: len(subscriber.on("feeds/front_door/state")) >= 2, what="door")
        assert emulator.failed == {"sine": 0, "door": 0}
    finally:
        subscriber.close()
    assert Token.get(Token.user == owner.id).revoked
    ys = [decoded(p, SINE_FEED).y for p in subscriber.on(f"feeds/{SINE_FEED}/axis_at_45_degrees")]
    assert ys[:4] == pytest.approx([math.sin(0.5 * k + math.pi / 4) for k in range(4)])
    assert {decoded(p, "front_door").y for p in subscriber.on("feeds/front_door/state")} == {0.0, 1.0}


def test_mqtt_through_the_embedded_broker_authenticates_with_the_token(tmp_path: Path, sqlite_db: pw.Database) -> None:
    owner = create_user(OWNER, "pw")
    settings = Settings.build(env={}, data_dir=tmp_path)
    service = ServiceAccount.load_or_create(tmp_path)
    with running_embedded_broker(settings, service) as broker:
        settings = settings.replace(mqtt=broker.address)
        received: list[tuple[str, bytes]] = []
        watcher = make_client(broker.service_endpoint(), service.client_id("test-watch"))
        subscribed = threading.Event()
        watcher.on_connect = lambda c, u, f, r, p: c.subscribe("feeds/#", qos=1)
        watcher.on_subscribe = lambda c, u, m, r, p: subscribed.set()
        watcher.on_message = lambda c, u, m: received.append((m.topic, bytes(m.payload)))
        watcher.connect(broker.host, broker.port)
        watcher.loop_start()
        try:
            assert subscribed.wait(10)
            with Emulator(settings, opened(), owner_email=OWNER, sources=[SineSource(interval=0.02)]):
                wait_for(lambda: len(received) >= 9, what="sine points through the embedded broker")
        finally:
            watcher.disconnect()
            watcher.loop_stop()
    assert {t for t, _ in received} == {f"feeds/{SINE_FEED}/{axis}" for axis in SineSource.PHASES}
    # MQTT orders messages per topic, not across topics (3.1.1 section 4.6): the 0-degree axis's first point.
    first = next(payload for topic, payload in received if topic == f"feeds/{SINE_FEED}/axis_at_0_degrees")
    assert decoded(first, SINE_FEED).y == pytest.approx(0.0)
    assert Token.get(Token.user == owner.id).revoked


def test_system_source_publishes_this_machines_load(tmp_path: Path, owner: User) -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("the system source needs /proc")
    from emulator.system import SystemSource

    source = SystemSource(interval=0.02, feed="system_test")
    with recording_server() as server, Emulator(
        settings_for(tmp_path), opened(), owner_email=OWNER, sources=[source], via="http", http_url=server.url
    ):
        wait_for(lambda: any(r.path.endswith("/system_test/cpu_percent") for r in server.requests), what="cpu %")
    feed = get_feed("system_test")
    assert {a.name for a in Axis.select().where(Axis.feed == feed.id)} == set(source.axes)
    for request in server.requests:
        y = sample_from_fields(request.query["x"], request.query["y"], feed_casts(feed), now=0, tz=Settings().tz).y
        assert y >= 0
