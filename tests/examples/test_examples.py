from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from rtdp.accounts import create_token, create_user
from rtdp.codec import Casts, decode, sample_from_fields
from rtdp.models import User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed
from tests.emulator.recorder import recording_server
from tests.emulator.test_runner import Subscriber
from tests.emulator.viewer_server import running_viewer
from tests.support.env import free_port, wait_for
from tests.support.mosquitto import Mosquitto

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FEED = "sin_wave_over_time_in_seconds"
PHASES = {"axis_at_0_degrees": 0.0, "axis_at_45_degrees": math.pi / 4, "axis_at_90_degrees": math.pi / 2}


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTDP_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=120,
    )


def test_http_sine_posts_three_phase_shifted_axes_with_a_token() -> None:
    with recording_server() as server:
        result = run_example(
            "http_sine.py", "--url", server.url + "/realtime_data_processor", "--steps", "10", "--interval", "0",
            env={"RTDP_TOKEN": "tok-123"},
        )
        requests = list(server.requests)
    assert result.returncode == 0, result.stderr
    assert len(requests) == 30
    for axis, phase in PHASES.items():
        sent = [r for r in requests if r.path == f"/realtime_data_processor/service/feed_input.json/{FEED}/{axis}"]
        samples = [sample_from_fields(r.query["x"], r.query["y"], Casts(), now=0, tz=Settings().tz) for r in sent]
        assert [s.y for s in samples] == pytest.approx([math.sin(0.1 * k + phase) for k in range(10)], abs=1e-6)
        assert all(abs(s.x - time.time()) < 120 for s in samples)
    auth = requests[0].headers["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == "token:tok-123"


def test_http_sine_uses_email_and_password_and_defaults_to_128_steps() -> None:
    with recording_server() as server:
        result = run_example("http_sine.py", "--url", server.url, "--email", "ep@nothing.com", "--interval", "0",
                             env={"RTDP_PASSWORD": "1234"})
        requests = list(server.requests)
    assert result.returncode == 0, result.stderr
    assert len(requests) == 3 * 128
    assert base64.b64decode(requests[0].headers["Authorization"][6:]).decode() == "ep@nothing.com:1234"


def test_http_sine_stops_with_the_servers_reason_on_a_refusal() -> None:
    with recording_server() as server:
        server.status = 401
        result = run_example("http_sine.py", "--url", server.url, "--interval", "0", env={"RTDP_TOKEN": "bad"})
        assert len(server.requests) == 1
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr


def test_http_sine_needs_credentials() -> None:
    result = run_example("http_sine.py", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "--token" in result.stderr


def test_mqtt_paho_publishes_json_points_at_qos_1(mosquitto: Mosquitto) -> None:
    subscriber = Subscriber(mosquitto)
    try:
        result = run_example(
            "mqtt_paho.py", "--port", str(mosquitto.port), "--feed", "garden", "--axis", "soil", "--count", "4",
            "--interval", "0", env={"RTDP_MQTT_HOST": mosquitto.host, "RTDP_TOKEN": "tok"},
        )
        assert result.returncode == 0, result.stderr
        # The example waited for each PUBACK; delivery to this subscriber follows within moments.
        wait_for(lambda: len(subscriber.on("feeds/garden/soil")) == 4, what="4 points")
    finally:
        subscriber.close()
    payloads = subscriber.on("feeds/garden/soil")
    assert all(set(json.loads(p)) == {"x", "y"} for p in payloads)
    samples = [decode(p, Casts(), now=0, tz=Settings().tz)[0] for p in payloads]
    assert [s.y for s in samples] == pytest.approx([round(10 * math.sin(i / 2), 3) for i in range(4)])


def test_mqtt_paho_reports_an_unreachable_broker() -> None:
    result = run_example("mqtt_paho.py", "--port", str(free_port()), "--count", "1")
    assert result.returncode == 1
    assert "cannot reach the broker" in result.stderr


@pytest.fixture
def ep(sqlite_db: pw.Database) -> User:
    user = create_user("ep@nothing.com", "1234")
    feed = create_feed(FEED, user)
    for axis in PHASES:
        create_axis(feed, axis)
    return user


@pytest.fixture
def viewer(tmp_path: Path, ep: User, mosquitto: Mosquitto) -> Iterator[str]:
    # The fixture's SQLite file is the settings' default, so the viewer and this test share one database.
    settings = Settings.build(env={}, data_dir=tmp_path, broker=mosquitto.url)
    with running_viewer(settings) as url:
        yield url


def test_http_sine_against_the_viewer_reaches_the_broker(viewer: str, ep: User, mosquitto: Mosquitto) -> None:
    subscriber = Subscriber(mosquitto)
    token = create_token(ep).token
    try:
        result = run_example("http_sine.py", "--url", viewer, "--steps", "3", "--interval", "0",
                             env={"RTDP_TOKEN": token})
        assert result.returncode == 0, result.stderr + result.stdout
        wait_for(lambda: len(subscriber.on(f"feeds/{FEED}/axis_at_90_degrees")) == 3, what="3 points per axis")
    finally:
        subscriber.close()
    payloads = subscriber.on(f"feeds/{FEED}/axis_at_90_degrees")
    ys = [decode(p, Casts(), now=0, tz=Settings().tz)[0].y for p in payloads]
    assert ys == pytest.approx([math.sin(0.1 * k + math.pi / 2) for k in range(3)], abs=1e-6)


def test_http_sine_with_a_wrong_password_is_refused_by_the_viewer(viewer: str) -> None:
    result = run_example("http_sine.py", "--url", viewer, "--steps", "1", "--interval", "0",
                         "--email", "ep@nothing.com", "--password", "wrong")
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr
