"""Readers and writers in trouble: a viewer restarted while browsers stream, the SQLite database locked by
another process for 10 s, devices whose clocks are hours off. Nothing acknowledged is lost or duplicated, and
no stream shows a gap or a point twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import peewee as pw
import pytest

from rtdp.models import Point
from rtdp.store import points_after
from tests.faults.conftest import (
    BridgeProcess,
    DevicePublisher,
    ResumingReader,
    ViewerProcess,
    count,
    exactly_once,
    fault_axis,
    rss_mb,
)
from tests.support.env import free_port, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.faults

TOTAL = 3_000
RATE = 500


def test_viewer_restarted_while_browsers_stream(mosquitto: Mosquitto, sqlite_db: pw.Database, tmp_path: Path) -> None:
    """Three browsers stream a public feed while points arrive; the viewer is stopped and started again
    (same address). Each resumes by Last-Event-ID: every point once, in id order, none missing."""
    axis = fault_axis(x_cast="int", public=True)
    db_url = f"sqlite:///{sqlite_db.database}"
    bridge = BridgeProcess(mosquitto, db_url, tmp_path, "bridge-v")
    viewer = ViewerProcess(mosquitto, db_url, tmp_path, free_port())
    bridge.start()
    viewer.start()
    readers = [ResumingReader(f"{viewer.url}/api/v1/feeds/fault/stream") for _ in range(3)]
    try:
        wait_for(lambda: all(r.connections for r in readers), what="browsers streaming")
        device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, RATE)
        wait_for(lambda: all(len(r.ids) >= TOTAL // 3 for r in readers), timeout=60, what="a third streamed")
        # uvicorn ends by the SIGTERM it caught, once it shut down cleanly (systemd counts that as success).
        assert viewer.stop() in (0, -signal.SIGTERM)
        restarted_at = count(axis.id)
        viewer.start()
        device.finish()
        wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
        exactly_once(axis.id, TOTAL)
        stored = [row[0] for row in points_after(axis.feed, 0, TOTAL + 1)]
        wait_for(lambda: all(len(r.ids) >= TOTAL for r in readers), timeout=60, what="every point streamed")
        assert restarted_at < TOTAL, "the restart landed after the last point"
        assert viewer.process is not None and rss_mb(viewer.process.pid) < 200
        for reader in readers:
            assert reader.connections >= 2  # it did resume
            assert reader.ids == stored
    finally:
        for reader in readers:
            reader.close()
        viewer.stop()
        bridge.stop()


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_sqlite_locked_by_another_process_for_10_s(
    mosquitto: Mosquitto, sqlite_db: pw.Database, tmp_path: Path
) -> None:
    """Another process holds SQLite's exclusive lock for 10 s while points arrive: the bridge waits and
    retries (its intake full, Mosquitto queues), then stores everything once, in bounded memory."""
    axis = fault_axis(x_cast="int")
    db_path = str(sqlite_db.database)
    bridge = BridgeProcess(mosquitto, f"sqlite:///{db_path}", tmp_path, "bridge-lock")
    bridge.start()
    try:
        wait_for(lambda: "connected to MQTT" in bridge.log.read_text(), timeout=30, what="bridge connected")
        device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, RATE)
        wait_for(lambda: count(axis.id) >= TOTAL // 5, timeout=60, what="a fifth stored")
        sqlite_db.close()
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, db_path, "10"], stdout=subprocess.PIPE)
        assert locker.stdout is not None and locker.stdout.readline().strip() == b"locked"
        started, at_lock = time.monotonic(), device.sent
        assert locker.wait(30) == 0
        assert time.monotonic() - started >= 9.5
        assert device.sent > at_lock, "nothing was published while the database was locked"
        device.finish()
        wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
        exactly_once(axis.id, TOTAL)
        assert bridge.rss_mb() < 200
        assert "database write failed" in bridge.log.read_text()
    finally:
        assert bridge.stop() == 0, bridge.log.read_text()[-3000:]


def test_devices_whose_clocks_are_hours_off(mosquitto: Mosquitto, sqlite_db: pw.Database, tmp_path: Path) -> None:
    """Points stamped 6 hours ahead and 6 hours behind (a device in the wrong time zone, a clock never set)
    are stored at the x they carry, once each, and streamed live in commit order like any other."""
    axis = fault_axis(public=True)
    db_url = f"sqlite:///{sqlite_db.database}"
    bridge = BridgeProcess(mosquitto, db_url, tmp_path, "bridge-clock")
    viewer = ViewerProcess(mosquitto, db_url, tmp_path, free_port())
    bridge.start()
    viewer.start()
    reader = ResumingReader(f"{viewer.url}/api/v1/feeds/fault/stream")
    try:
        wait_for(lambda: reader.connections == 1, what="a browser streaming")
        now = time.time()
        xs = [now + 6 * 3600 + i for i in range(100)] + [now - 6 * 3600 + i for i in range(100)]
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="skewed", protocol=mqtt.MQTTv311)
        device.connect(mosquitto.host, mosquitto.port)
        device.loop_start()
        for x in xs:
            device.publish("feeds/fault/a", f'{{"x": {x!r}, "y": 1}}', qos=1).wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        wait_for(lambda: count(axis.id) == len(xs), timeout=60, what="every skewed point")
        stored = sorted(float(p.x) for p in Point.select(Point.x))
        assert stored == sorted(xs)
        wait_for(lambda: len(reader.ids) == len(xs), timeout=30, what="every point streamed")
        assert reader.ids == [row[0] for row in points_after(axis.feed, 0)]
        # History answers both ends.
        points = httpx.get(f"{viewer.url}/api/v1/feeds/fault/axes/a/points", params={"limit": 1000}).json()["points"]
        assert len(points) == len(xs)
    finally:
        reader.close()
        viewer.stop()
        bridge.stop()
