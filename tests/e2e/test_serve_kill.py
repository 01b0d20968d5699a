"""`rtdp serve` is SIGKILLed three times while a paho publisher sends 20,000 QoS 1 points: every point
the embedded broker acknowledged (PUBACK) is stored, exactly once (issue 10: ack after commit)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.env import free_port, wait_for
from tests.support.processes import crash, terminate

TOTAL = 20_000
KILL_AT = (3_000, 8_000, 13_000)  # PUBACKs received before each kill
BASE_X = 1.7e9
TOPIC = "feeds/manual_feed_a/killed"


class Serve:
    """`rtdp serve --demo` on fixed free ports and one data dir, started again after each kill."""

    def __init__(self, data_dir: Path) -> None:
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.data_dir = data_dir
        self.log = data_dir.parent / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rtdp", "serve", "--demo", "--data-dir", str(self.data_dir),
                 "--http", f"127.0.0.1:{self.http_port}", "--mqtt", f"127.0.0.1:{self.mqtt_port}"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_for(self._ready, timeout=60, interval=0.05, what="rtdp serve to answer /readyz")

    def _ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        crash(self.process)

    def stop(self) -> int:
        return terminate(self.process)


class Publisher:
    """paho with its default in-flight window (20), reconnecting at once; records the x of every PUBACK."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="killed-publisher", clean_session=True)
        self.client.username_pw_set("ep@nothing.com", "1234")
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_publish = self._on_publish
        self.port = port
        self.acked: list[float] = []
        self._lock = threading.Lock()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        with self._lock:
            self.acked.append(BASE_X + mid - 1)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def run(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        for i in range(TOTAL):
            # paho queues while disconnected and sends (again, DUP) what was not acknowledged after reconnecting.
            info = self.client.publish(TOPIC, f'{{"x":{BASE_X + i},"y":{i % 97}}}', qos=1)
            # paho numbers messages 1, 2, ... (no wrap below 65,535): the PUBACK's id names the point.
            assert info.mid == i + 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    served = Serve(tmp_path / "data")
    try:
        yield served
    finally:
        assert served.stop() == 0, served.log.read_text()[-3000:]


def stored_xs(db: Path) -> dict[float, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT p.x, COUNT(*) FROM point p JOIN axis a ON p.axis_id = a.id WHERE a.name = 'killed' GROUP BY p.x"
        ).fetchall()
    return {float(x): int(n) for x, n in rows}


@pytest.mark.slow
def test_every_point_acknowledged_by_a_sigkilled_serve_is_stored_exactly_once(serve: Serve) -> None:
    serve.start()
    publisher = Publisher(serve.mqtt_port)
    at_kill: list[int] = []
    try:
        publisher.run()
        for threshold in KILL_AT:
            wait_for(lambda: publisher.count() >= threshold, timeout=120, what=f"{threshold} PUBACKs")  # noqa: B023
            serve.kill()
            at_kill.append(publisher.count())
            serve.start()
        wait_for(lambda: publisher.count() >= TOTAL, timeout=180, interval=0.1, what=f"{TOTAL} PUBACKs")
    finally:
        publisher.close()
    assert serve.stop() == 0
    stored = stored_xs(serve.data_dir / "rtdp.sqlite3")
    acked = set(publisher.acked)
    assert len(acked) == TOTAL
    assert not acked - stored.keys(), f"{len(acked - stored.keys())} acknowledged points lost"
    assert set(stored.values()) == {1}
    # Exactly once in the bookkeeping too: a point sent again after a kill (DUP) replaced its stored copy,
    # it was not counted twice.
    with sqlite3.connect(serve.data_dir / "rtdp.sqlite3") as conn:
        [(counted,)] = conn.execute("SELECT point_count FROM axis WHERE name = 'killed'").fetchall()
    assert counted == len(stored)
    # The kills landed mid-stream (else this test would prove nothing).
    assert at_kill[-1] < TOTAL, at_kill
