"""A disk that fills up: the SQLite database on a small filesystem made for the test (tmpfs, size=8m). When
it is full the bridge logs why and retries (Mosquitto queues meanwhile), /readyz says not ready, nothing is
corrupted, and once space is freed every point is stored, once."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rtdp.database import open_database
from tests.faults.conftest import BridgeProcess, DevicePublisher, ViewerProcess, count, exactly_once, fault_axis
from tests.support.env import free_port, require, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.faults

TOTAL = 4_000
RATE = 1_000
SIZE = 8 * 1024 * 1024
MIN_FREE = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    can = os.geteuid() == 0 and shutil.which("mount") is not None
    done = can and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount)], capture_output=True
    ).returncode == 0
    require(done, "cannot mount a small filesystem here (needs root and mount; the disk-full test is skipped)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_writes_cleanly_and_they_resume(mosquitto: Mosquitto, small_disk: Path) -> None:
    path = small_disk / "rtdp.sqlite3"
    db = open_database(f"sqlite:///{path}")
    try:
        axis = fault_axis(x_cast="int", y_cast="int")
        url = f"sqlite:///{path}"
        work = small_disk.parent
        bridge = BridgeProcess(mosquitto, url, work, "bridge-disk")
        viewer = ViewerProcess(mosquitto, url, work, free_port(), "--min-free-disk", str(MIN_FREE))
        bridge.start()
        viewer.start()
        try:
            wait_for(lambda: "connected to MQTT" in bridge.log.read_text(), timeout=30, what="bridge connected")
            # Leave little room: the WAL soon needs more than there is.
            filler = small_disk / "filler"
            stat = os.statvfs(small_disk)
            filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 400 * 1024))
            device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, RATE)
            wait_for(lambda: "disk is full" in bridge.log.read_text(), timeout=60, what="the disk to fill")
            ready = httpx.get(f"{viewer.url}/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False
            stalled = count(axis.id)
            assert 0 <= stalled < TOTAL
            filler.unlink()  # the operator frees space
            device.finish()
            wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
            exactly_once(axis.id, TOTAL)
            assert httpx.get(f"{viewer.url}/readyz").status_code == 200
            assert bridge.rss_mb() < 200
        finally:
            viewer.stop()
            assert bridge.stop() == 0, bridge.log.read_text()[-3000:]
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
