"""THE fault test: the bridge is SIGKILLed three times while 20,000 QoS 1 points arrive; afterwards every
point is stored exactly once (Mosquitto keeps the persistent session and redelivers what was not
acknowledged; the (axis, x) upsert absorbs what was stored but not yet acknowledged)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import peewee as pw
import pytest

from rtdp.models import Axis, Point, User
from rtdp.store import create_feed
from tests.support.env import require, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.processes import crash, terminate

TOTAL = 20_000
KILL_AT = (3_000, 8_000, 13_000)
ROOT = Path(__file__).resolve().parents[2]


class BridgeProcess:
    def __init__(self, broker: Mosquitto, db_url: str, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "rtdp", "bridge", "--broker", broker.url, "--db", db_url,
            "--client-id", "fault-bridge", "--data-dir", str(log.parent / "data"),
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        crash(self.process)

    def stop(self) -> int:
        return terminate(self.process)


@pytest.fixture
def bridge_process(mosquitto: Mosquitto, any_db: pw.Database, pg_url_or_none: str | None, tmp_path: Path
                   ) -> Iterator[BridgeProcess]:
    url = pg_url_or_none or f"sqlite:///{any_db.database}"
    process = BridgeProcess(mosquitto, url, tmp_path / "bridge.log")
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log.read_text()[-3000:]


@pytest.fixture
def pg_url_or_none(any_db: pw.Database, request: pytest.FixtureRequest) -> str | None:
    if isinstance(any_db, pw.PostgresqlDatabase):
        return str(request.getfixturevalue("pg_url"))
    return None


def _count(axis_id: int) -> int:
    try:
        return int(Point.select().where(Point.axis == axis_id).count())
    except (pw.OperationalError, pw.InterfaceError):
        Point._meta.database.close()
        return -1


def _feed_lines(stdin: IO[bytes], pace: threading.Event) -> None:
    # Paced so the kills land while points are still arriving (about 4 s for all of them).
    for start in range(0, TOTAL, 200):
        chunk = "".join(f'{{"x":{i},"y":{i % 97}}}\n' for i in range(start, start + 200))
        stdin.write(chunk.encode())
        stdin.flush()
        pace.wait(0.04)
    stdin.close()


@pytest.mark.slow
def test_sigkilled_bridge_loses_and_duplicates_nothing(
    bridge_process: BridgeProcess, mosquitto: Mosquitto, any_db: pw.Database
) -> None:
    mosquitto_pub = shutil.which("mosquitto_pub")
    require(mosquitto_pub is not None, "mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    assert mosquitto_pub is not None
    owner = User.create(email="o@example.com", password_hash="-")
    feed = create_feed("fault", owner, x_cast="int", y_cast="int")
    axis = Axis.create(feed=feed, name="a")
    probe = Axis.create(feed=feed, name="probe")

    bridge_process.start()
    # The session must exist before publishing: wait until a probe point has gone all the way through.
    def probe_stored() -> bool:
        subprocess.run(
            [mosquitto_pub, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1", "-t", "feeds/fault/probe",
             "-m", '{"x": 1, "y": 1}'],
            check=True,
        )
        return _count(probe.id) == 1

    wait_for(probe_stored, timeout=30, interval=0.3, what="bridge storing points")

    publisher = subprocess.Popen(
        [mosquitto_pub, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1", "-t", "feeds/fault/a", "-l"],
        stdin=subprocess.PIPE,
    )
    assert publisher.stdin is not None
    pace = threading.Event()
    feeder = threading.Thread(target=_feed_lines, args=(publisher.stdin, pace))
    feeder.start()
    at_kill: list[int] = []
    try:
        for threshold in KILL_AT:
            target: int = threshold
            wait_for(lambda: _count(axis.id) >= target, timeout=120, what=f"{target} points stored")  # noqa: B023
            bridge_process.kill()
            at_kill.append(_count(axis.id))
            bridge_process.start()
    finally:
        feeder.join()
        assert publisher.wait(120) == 0

    wait_for(lambda: _count(axis.id) == TOTAL, timeout=180, interval=0.2, what=f"{TOTAL} points")
    xs = Point.select(pw.fn.COUNT(pw.fn.DISTINCT(Point.x)), pw.fn.MIN(Point.x), pw.fn.MAX(Point.x)).where(
        Point.axis == axis.id
    )
    assert list(xs.tuples()) == [(TOTAL, 0, TOTAL - 1)]
    assert Axis.get_by_id(axis.id).point_count == TOTAL
    # The kills landed mid-stream (else this test would prove nothing).
    assert at_kill[-1] < TOTAL, at_kill
