"""`rtdp serve` as a user runs it: a subprocess on free ports, driven with mosquitto_pub/sub, HTTP and SSE."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import free_port, require, wait_for
from tests.support.mosquitto import Mosquitto

RTDP = [sys.executable, "-m", "rtdp"]
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
EP = ("ep@nothing.com", "1234")
AP = ("ap@nothing.com", "1234")


@dataclass
class Served:
    process: subprocess.Popen[str]
    web: str
    mqtt_port: int
    data_dir: Path
    output: list[str] = field(default_factory=list)

    def get(self, path: str, auth: tuple[str, str] = EP, **params: Any) -> httpx.Response:
        return httpx.get(self.web + path, auth=auth, params=params, timeout=10)

    def points(self, feed: str, axis: str) -> list[dict[str, Any]]:
        response = self.get(f"/api/v1/feeds/{feed}/axes/{axis}/points")
        assert response.status_code == 200, response.text
        return response.json()["points"]  # type: ignore[no-any-return]

    def pub(self, topic: str, message: str, auth: tuple[str, str] = EP) -> None:
        assert MOSQUITTO_PUB is not None
        subprocess.run(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-u", auth[0], "-P", auth[1],
             "-q", "1", "-t", topic, "-m", message],
            check=True, timeout=10,
        )


def _reader(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    mqtt_port = free_port()
    with running_serve(tmp_path, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}") as served:
        yield served


@contextmanager
def running_serve(
    tmp_path: Path, mqtt_port: int, *broker_args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """`rtdp serve --demo` on a free HTTP port, in `data_dir` (default tmp_path/data: give the same one to start
    it again on the same data), with `env` added to its environment."""
    require(MOSQUITTO_PUB is not None and MOSQUITTO_SUB is not None,
            "mosquitto clients are not installed (apt-get install mosquitto-clients)")
    http_port = free_port()
    data_dir = data_dir if data_dir is not None else tmp_path / "data"
    process = subprocess.Popen(
        [*RTDP, "serve", "--demo", "--data-dir", str(data_dir), "--http", f"127.0.0.1:{http_port}", *broker_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    served = Served(process, f"http://127.0.0.1:{http_port}", mqtt_port, data_dir)
    threading.Thread(target=_reader, args=(process, served.output), daemon=True).start()
    try:
        wait_for(lambda: any("rtdp is running" in line for line in served.output) or process.poll() is not None,
                 timeout=30, what="rtdp serve to start")
        assert process.poll() is None, "".join(served.output)
        wait_for(lambda: httpx.get(served.web + "/readyz", timeout=2).status_code == 200, timeout=15,
                 what="/readyz")
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_serve_demo_mqtt_http_sse_errors_and_acl(served: Served) -> None:
    output = "".join(served.output)
    assert f"mqtt://127.0.0.1:{served.mqtt_port}" in output and served.web in output
    # The demo data is there, dated to end today.
    demo = served.points("manual_feed_a", "axis_a00")
    assert [p["y"] for p in demo] == [0, 2, 7, 3, 2]
    assert time.time() - demo[-1]["x"] < 2 * 86400

    # mosquitto_pub -> stored -> JSON API
    served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-01T00:00:00Z", "y": 11}')
    wait_for(lambda: any(p["y"] == 11 for p in served.points("manual_feed_a", "axis_a00")), what="MQTT point stored")

    # The original URL -> an SSE client sees it, with the point id as event id.
    events: list[tuple[str, dict[str, Any]]] = []

    def listen(last_id: str | None = None, count: int = 1) -> None:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with httpx.stream("GET", served.web + "/api/v1/feeds/manual_feed_a/stream", auth=EP, headers=headers,
                          timeout=20) as response:
            assert response.status_code == 200
            event_id = ""
            for line in response.iter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:") and event_id:
                    events.append((event_id, json.loads(line[5:])))
                    if len(events) >= count:
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    # Publish until the stream is attached: the first accepted point after that must arrive.
    def posted_and_seen() -> bool:
        answer = served.get("/realtime_data_processor/service/feed_input.json/manual_feed_a/axis_a00", y="12")
        assert answer.status_code == 200, answer.text
        assert answer.json()["y"] == 12
        return bool(events)

    wait_for(posted_and_seen, timeout=15, interval=0.2, what="SSE event for an HTTP point")
    listener.join(10)
    first_id, first = events[0]
    assert first["axis"] == "axis_a00" and first["y"] == 12 and int(first_id) == first["id"]

    # Last-Event-ID: a reconnecting client gets what it missed, from the database.
    served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-02T00:00:00Z", "y": 13}')
    wait_for(lambda: any(p["y"] == 13 for p in served.points("manual_feed_a", "axis_a00")), what="point 13")
    events.clear()
    listen(first_id, count=1)
    assert events[0][1]["y"] in (12, 13) and int(events[0][0]) > int(first_id)

    # A bad payload is reported on the errors topic and stores nothing.
    assert MOSQUITTO_SUB is not None
    sub = subprocess.Popen(
        [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(served.mqtt_port), "-u", EP[0], "-P", EP[1], "-q", "1",
         "-t", "rtdp/errors/manual_feed_a/#", "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    before = len(served.points("manual_feed_a", "axis_a00"))

    def error_seen() -> bool:
        if sub.poll() is not None:
            return True
        served.pub("feeds/manual_feed_a/axis_a00", "3.5")  # int feed: 3.5 is refused
        return False

    wait_for(error_seen, timeout=20, interval=0.5, what="a message on rtdp/errors")
    assert sub.stdout is not None
    report = json.loads(sub.stdout.read())
    assert "integer" in report["error"]
    assert len(served.points("manual_feed_a", "axis_a00")) == before

    # ACL: ap cannot write ep's feed over MQTT (dropped) nor HTTP (403), nor read it.
    served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-03T00:00:00Z", "y": 666}', auth=AP)
    assert served.get("/service/feed_input.json/manual_feed_a/axis_a00", auth=AP, y="667").status_code == 403
    assert served.get("/api/v1/feeds/manual_feed_a/axes/axis_a00/points", auth=AP).status_code == 403
    served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-04T00:00:00Z", "y": 14}')
    wait_for(lambda: any(p["y"] == 14 for p in served.points("manual_feed_a", "axis_a00")), what="point 14")
    assert not any(p["y"] in (666, 667) for p in served.points("manual_feed_a", "axis_a00"))


def test_serve_answers_an_http_point_once_it_is_stored_and_still_publishes_it(served: Served) -> None:
    """rtdp serve hands HTTP points to its broker and writer in-process: the 200 comes after the commit, so a
    read right after it sees the point, and MQTT subscribers of feeds/<feed>/<axis> still get it."""
    assert MOSQUITTO_SUB is not None
    sub = subprocess.Popen(
        [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(served.mqtt_port), "-u", EP[0], "-P", EP[1], "-q", "1",
         "-t", "feeds/manual_feed_a/axis_a00", "-W", "60"],
        stdout=subprocess.PIPE, text=True,
    )
    seen: list[int] = []

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            seen.extend(int(point["y"]) for point in json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    url = "/service/feed_input.json/manual_feed_a/axis_a00"
    try:
        # The subscription is in place once a point sent after it arrives.
        wait_for(lambda: served.get(url, y="100").status_code == 200 and 100 in seen, timeout=20, interval=0.3,
                 what="mosquitto_sub to receive an HTTP point")
        for second in range(20):
            x = f"2031-01-01T00:00:{second:02d}Z"
            answer = served.get(url, x=x, y=str(200 + second))
            assert answer.status_code == 200, answer.text
            read_back = served.get("/api/v1/feeds/manual_feed_a/axes/axis_a00/points", since=x, until=x)
            assert [p["y"] for p in read_back.json()["points"]] == [200 + second], f"point {second} not readable"
        wait_for(lambda: set(range(200, 220)) <= set(seen), timeout=20, what="every HTTP point on MQTT")
    finally:
        sub.terminate()
        sub.wait(10)


def test_serve_answers_plain_gets_on_a_kept_connection_once_stored(served: Served) -> None:
    """Scripts' GETs as wrk and curl send them, whose heads the connection reads itself (viewer.head): each
    200 is a point a read right after it finds, one at a time and pipelined."""
    auth = base64.b64encode(":".join(EP).encode()).decode()
    url = "/service/feed_input.json/manual_feed_a/axis_a00"

    def get(x: str, y: int) -> bytes:
        return f"GET {url}?x={x}&y={y} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\r\n".encode()

    def readable(x: str) -> list[int]:
        points = served.get("/api/v1/feeds/manual_feed_a/axes/axis_a00/points", since=x, until=x).json()["points"]
        return [point["y"] for point in points]

    port = int(served.web.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as answers:

        def answer() -> tuple[bytes, bytes]:
            status = answers.readline()
            length = 0
            while (line := answers.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            return status, answers.read(length)

        for second in range(10):
            x = f"2032-01-01T00:00:{second:02d}Z"
            sock.sendall(get(x, 300 + second))
            status, body = answer()
            assert status.startswith(b"HTTP/1.1 200"), body
            assert readable(x) == [300 + second], f"point {second} not readable"
        first, second = "2032-01-01T00:01:00Z", "2032-01-01T00:01:01Z"
        sock.sendall(get(first, 400) + get(second, 401))
        assert [answer()[0][:12] for _ in range(2)] == [b"HTTP/1.1 200"] * 2
        assert readable(first) == [400] and readable(second) == [401]


def test_serve_stops_cleanly_and_reports_a_port_in_use(served: Served) -> None:
    clash = subprocess.run(
        [*RTDP, "serve", "--data-dir", str(served.data_dir.parent / "other"), "--http",
         served.web.removeprefix("http://"), "--mqtt", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )
    assert clash.returncode != 0
    assert "--http" in clash.stderr and "Traceback" not in clash.stderr
    clash = subprocess.run(
        [*RTDP, "serve", "--data-dir", str(served.data_dir.parent / "other"), "--http", f"127.0.0.1:{free_port()}",
         "--mqtt", f"127.0.0.1:{served.mqtt_port}"],
        capture_output=True, text=True, timeout=30,
    )
    assert clash.returncode != 0
    assert "--mqtt" in clash.stderr and "Traceback" not in clash.stderr

    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(20) == 0
    assert "Traceback" not in "".join(served.output)


def test_serve_with_an_external_broker_stores_through_its_subscription(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """With --broker there is no embedded broker and no intake: the bridge subscribes as `rtdp bridge` does."""
    with running_serve(tmp_path, mosquitto.port, "--broker", mosquitto.url) as served:
        assert f"mqtt {mosquitto.url}" in "".join(served.output)
        # Mosquitto here is anonymous; the point must come back through the bridge's subscription.
        def published_and_stored() -> bool:
            served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-05T00:00:00Z", "y": 21}')
            return any(p["y"] == 21 for p in served.points("manual_feed_a", "axis_a00"))

        wait_for(published_and_stored, timeout=20, interval=0.5, what="a point stored through Mosquitto")


def test_serve_emulate_feeds_the_original_sine_wave(tmp_path: Path) -> None:
    """`rtdp serve --demo --emulate`: the original's scheduled sine task, as devices publishing over MQTT."""
    mqtt_port = free_port()
    with running_serve(tmp_path, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}", "--emulate") as served:
        feed = "sin_wave_over_time_in_seconds"
        axes = ("axis_at_0_degrees", "axis_at_45_degrees", "axis_at_90_degrees")
        wait_for(lambda: all(len(served.points(feed, axis)) >= 2 for axis in axes), timeout=30, interval=0.5,
                 what="sine points on all three axes")
        for axis in axes:
            assert all(-1.0 <= p["y"] <= 1.0 for p in served.points(feed, axis))
        # --demo --emulate: a dashboard over the emulated devices, for the emulator's owner.
        listed = httpx.get(served.web + "/api/v1/dashboards", auth=EP, timeout=10).json()["dashboards"]
        assert [d["name"] for d in listed] == ["Emulated devices"]
        kinds = [w["type"] for w in listed[0]["widgets"]]
        assert {"chart", "value", "state", "table"} <= set(kinds)
        assert listed[0]["widgets"][0]["series"] == [{"feed": feed, "axis": axis} for axis in axes]
        assert f"/dashboards/{listed[0]['id']}" in "".join(served.output)
        assert httpx.get(f"{served.web}/dashboards/{listed[0]['id']}", auth=EP, timeout=10).status_code in (200, 303)
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(20) == 0


def test_serve_on_the_standard_asyncio_loop(tmp_path: Path) -> None:
    """`--loop asyncio`: everything works without uvloop (the way out where uvloop is missing or misbehaves)."""
    mqtt_port = free_port()
    with running_serve(tmp_path, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}", "--loop", "asyncio") as served:
        served.pub("feeds/manual_feed_a/axis_a00", '{"x": "2030-01-06T00:00:00Z", "y": 22}')
        wait_for(lambda: any(p["y"] == 22 for p in served.points("manual_feed_a", "axis_a00")), timeout=15,
                 interval=0.2, what="a point stored on the asyncio loop")
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(20) == 0
    assert "Traceback" not in "".join(served.output)


def test_a_password_changed_on_the_web_closes_its_mqtt_connections_at_once(tmp_path: Path) -> None:
    """Issue 11 #8 on MQTT: not after the credential lifetime (an hour here), at once."""
    mqtt_port = free_port()
    broker_args = ("--mqtt", f"127.0.0.1:{mqtt_port}", "--credential-ttl", "3600")
    with running_serve(tmp_path, mqtt_port, *broker_args) as served:
        assert MOSQUITTO_SUB is not None
        subscriber = subprocess.Popen(
            ["stdbuf", "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(mqtt_port), "-u", EP[0], "-P", EP[1], "-t",
             "rtdp/stored/manual_feed_a", "-d"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(subscriber.stdout or ()), daemon=True).start()
        try:
            wait_for(lambda: any("SUBACK" in line for line in lines), what="the subscription")
            with httpx.Client(base_url=served.web, timeout=10) as web:
                def token(path: str) -> str:
                    match = re.search(r'name="csrf_token" value="([^"]+)"', web.get(path).text)
                    assert match, path
                    return match.group(1)

                signed_in = web.post("/login", data={"email": EP[0], "password": EP[1], "csrf_token": token("/login")})
                assert signed_in.status_code in (200, 303)
                changed = web.post("/account/password", data={
                    "current_password": EP[1], "new_password": "a-new-password", "csrf_token": token("/account"),
                })
                assert "Password changed" in changed.text
            # Disconnected, and its reconnection with the old password refused: mosquitto_sub gives up.
            assert subscriber.wait(15) != 0
        finally:
            if subscriber.poll() is None:
                subscriber.kill()
                subscriber.wait()


def test_password_guesses_over_http_and_mqtt_share_one_throttle(tmp_path: Path) -> None:
    """Issue 11 #7: the web and the broker of one `rtdp serve` count guesses together."""
    mqtt_port = free_port()
    with running_serve(tmp_path, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}", "--login-attempts", "2") as served:
        assert [served.get("/api/v1/feeds/manual_feed_a", auth=(EP[0], "wrong")).status_code for _ in range(2)] == [
            401, 401,
        ]
        assert MOSQUITTO_PUB is not None
        refused = subprocess.run(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(mqtt_port), "-u", EP[0], "-P", EP[1], "-q", "1",
             "-t", "feeds/manual_feed_a/y", "-m", "1"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert refused.returncode != 0 and "not authori" in (refused.stderr + refused.stdout).lower(), refused
