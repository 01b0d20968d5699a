"""`rtdp viewer --workers 2`: two viewer processes on one port (SO_REUSEPORT, viewer.workers). Browsers'
streams land on both; one worker is killed mid-stream and started again by the viewer; every browser sees
every point once, in order; a SIGTERM ends the lot."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import peewee as pw
import psutil
import pytest

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
from tests.support.processes import established

pytestmark = pytest.mark.faults

TOTAL = 3_000
RATE = 500
READERS = 12  # all on one worker by chance: 2 in 2**12


def _listening(pid: int, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections("tcp"))
    except psutil.NoSuchProcess:
        return False


def test_two_workers_on_one_port_survive_a_worker_killed_mid_stream(
    mosquitto: Mosquitto, sqlite_db: pw.Database, tmp_path: Path
) -> None:
    axis = fault_axis(x_cast="int", public=True)
    db_url = f"sqlite:///{sqlite_db.database}"
    bridge = BridgeProcess(mosquitto, db_url, tmp_path, "bridge-w")
    viewer = ViewerProcess(mosquitto, db_url, tmp_path, free_port(), "--workers", "2")
    bridge.start()
    viewer.start()
    assert viewer.process is not None
    supervisor = psutil.Process(viewer.process.pid)
    readers = [ResumingReader(f"{viewer.url}/api/v1/feeds/fault/stream") for _ in range(READERS)]
    try:
        workers = [child.pid for child in supervisor.children()]
        assert len(workers) == 2
        wait_for(lambda: sum(established(pid, viewer.port) for pid in workers) >= READERS, what="every stream open")
        assert all(established(pid, viewer.port) for pid in workers), "the kernel spread the streams over both"
        assert not _listening(supervisor.pid, viewer.port), "the viewer itself takes no connections"

        device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, RATE)
        wait_for(lambda: all(len(r.ids) >= TOTAL // 3 for r in readers), timeout=60, what="a third streamed")
        victim, survivor = workers
        os.kill(victim, signal.SIGKILL)
        killed_at = count(axis.id)

        def restarted() -> list[int]:
            return [c.pid for c in supervisor.children() if c.pid not in workers and _listening(c.pid, viewer.port)]

        wait_for(lambda: restarted(), timeout=60, what="the killed worker started again")
        device.finish()
        wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
        exactly_once(axis.id, TOTAL)
        stored = [row[0] for row in points_after(axis.feed, 0, TOTAL + 1)]
        wait_for(lambda: all(len(r.ids) >= TOTAL for r in readers), timeout=60, what="every point streamed")
        assert killed_at < TOTAL, "the kill landed after the last point"
        assert any(r.connections >= 2 for r in readers), "the killed worker's browsers resumed"
        for reader in readers:
            assert reader.ids == stored
        # The new worker takes connections of its own (new ones are spread over both again).
        (new,) = restarted()
        while not established(new, viewer.port):
            assert len(readers) < 4 * READERS, "no new stream reached the restarted worker"
            readers.append(ResumingReader(f"{viewer.url}/api/v1/feeds/fault/stream"))
            wait_for(lambda: sum(established(p, viewer.port) for p in (new, survivor)) >= len(readers),
                     what="the new stream open")
        assert all(rss_mb(pid) < 200 for pid in (new, survivor))
    finally:
        for reader in readers:
            reader.close()
        children = supervisor.children()
        stopped = viewer.stop()
        bridge.stop()
    assert stopped == 0
    _, left = psutil.wait_procs(children, timeout=10)
    assert not left, "every worker ended with the viewer"
