"""The broker or the database restarts while devices publish: every point a device got a PUBACK for is stored
exactly once afterwards, and the bridge's memory stays bounded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rtdp.database import open_database
from tests.faults.conftest import BridgeProcess, DevicePublisher, count, exactly_once, fault_axis
from tests.support import pgcluster
from tests.support.env import free_port, require, wait_for, wait_port
from tests.support.mosquitto import AS_ROOT, MOSQUITTO, Mosquitto

pytestmark = pytest.mark.faults

TOTAL = 4_000
RATE = 1_000  # points a second: the restart lands mid-stream


def test_postgres_restarts_mid_stream(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """On a PostgreSQL cluster of the test's own (never the machine's): stopped and started again (fast
    shutdown: open transactions are cut) while points arrive. The bridge retries; nothing acknowledged is lost."""
    reason = pgcluster.available()
    require(reason is None, f"no PostgreSQL cluster of our own: {reason}")
    with pgcluster.own_cluster(tmp_path / "pg") as cluster:
        db = open_database(cluster.url)
        try:
            axis = fault_axis(x_cast="int", y_cast="int")
            bridge = BridgeProcess(mosquitto, cluster.url, tmp_path, "bridge-pg")
            bridge.start()
            try:
                wait_for(lambda: "connected to MQTT" in bridge.log.read_text(), timeout=30, what="bridge connected")
                device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, RATE)
                wait_for(lambda: count(axis.id) >= TOTAL // 4, timeout=60, what="a quarter stored")
                cluster.restart()
                restarted_at = device.sent
                device.finish()
                wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
                exactly_once(axis.id, TOTAL)
                assert restarted_at < TOTAL, "the restart landed after the last publish"
                assert bridge.rss_mb() < 200
            finally:
                assert bridge.stop() == 0, bridge.log.read_text()[-3000:]
        finally:
            db.close()


def _start_mosquitto(config: Path, log: Path) -> subprocess.Popen[bytes]:
    assert MOSQUITTO is not None
    with log.open("ab") as out:
        return subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)


def test_mosquitto_restarts_mid_stream_with_persistence(sqlite_db: object, tmp_path: Path) -> None:
    """Mosquitto with persistence on (as mosquitto.conf sets it) is stopped and started again: the bridge's
    session and what was queued for it survive (a clean stop saves them; a crash would lose what came since
    the last autosave_interval save). Devices resend what was not acknowledged."""
    require(MOSQUITTO is not None, "mosquitto is not installed (apt-get install mosquitto)")
    work = tmp_path / "mosquitto"
    work.mkdir()
    port = free_port()
    config = work / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n{AS_ROOT}"
        f"persistence true\npersistence_location {work}/\nautosave_interval 60\n"
        "max_queued_messages 100000\nmax_inflight_messages 1000\n"
    )
    log = work / "mosquitto.log"
    process = _start_mosquitto(config, log)
    wait_port("127.0.0.1", port)
    broker = Mosquitto("127.0.0.1", port, process, config)
    axis = fault_axis(x_cast="int", y_cast="int")
    bridge = BridgeProcess(broker, f"sqlite:///{sqlite_db.database}", tmp_path, "bridge-mq")  # type: ignore[attr-defined]
    try:
        bridge.start()
        wait_for(lambda: "connected to MQTT" in bridge.log.read_text(), timeout=30, what="bridge connected")
        device = DevicePublisher("127.0.0.1", port, "feeds/fault/a", 0, TOTAL, RATE)
        wait_for(lambda: count(axis.id) >= TOTAL // 4, timeout=60, what="a quarter stored")
        process.terminate()
        assert process.wait(30) == 0, log.read_text()[-2000:]
        restarted_at = device.sent
        process = _start_mosquitto(config, log)
        wait_port("127.0.0.1", port)
        device.finish()
        wait_for(lambda: count(axis.id) == TOTAL, timeout=120, what=f"{TOTAL} points")
        exactly_once(axis.id, TOTAL)
        assert restarted_at < TOTAL, "the restart landed after the last publish"
        assert bridge.rss_mb() < 200
        assert bridge.stop() == 0, bridge.log.read_text()[-3000:]
    finally:
        bridge.stop()
        process.terminate()
        process.wait(10)
