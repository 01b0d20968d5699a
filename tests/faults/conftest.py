"""Fault-suite machinery: real `rtdp bridge` processes on a private Mosquitto, paced QoS 1 publishers, and
what a process holds in memory. Every module here sets `pytestmark = pytest.mark.faults`
(`pytest -m faults` runs only them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import peewee as pw

from rtdp.models import Axis, Point, User
from rtdp.store import create_feed
from tests.support.env import require, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.processes import crash, terminate

ROOT = Path(__file__).resolve().parents[2]


class BridgeProcess:
    """`rtdp bridge` in a process of its own, logging to a file."""

    def __init__(self, broker: Mosquitto, db_url: str, workdir: Path, client_id: str, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.args = [
            sys.executable, "-m", "rtdp", "bridge", "--broker", broker.url, "--db", db_url,
            "--client-id", client_id, "--data-dir", str(workdir / "data"), *extra,
        ]
        self.log = workdir / f"{client_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([*self.args, *extra], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        crash(self.process)

    def stop(self) -> int:
        return terminate(self.process)

    def rss_mb(self) -> float:
        assert self.process is not None
        return rss_mb(self.process.pid)


def fault_axis(**options: Any) -> Axis:
    """The axis `a` of a feed `fault` (made with these `create_feed` options) of a throwaway owner."""
    owner = User.create(email="o@example.com", password_hash="-")
    return Axis.create(feed=create_feed("fault", owner, **options), name="a")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def mosquitto_pub() -> str:
    found = shutil.which("mosquitto_pub")
    require(found is not None, "mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    assert found is not None
    return found


class PacedPublisher:
    """`mosquitto_pub -l` at QoS 1 sending {"x": i, "y": i % 97} for i in [start, stop), `per_second` lines a
    second: a device fleet that keeps publishing while the test breaks things."""

    def __init__(self, broker: Mosquitto, topic: str, start: int, stop: int, per_second: int) -> None:
        self.process = subprocess.Popen(
            [mosquitto_pub(), "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l",
             "-i", f"pub-{topic.replace('/', '-')}-{start}"],
            stdin=subprocess.PIPE,
        )
        self.range = (start, stop)
        self.per_second = per_second
        self.sent = start
        self._pace = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        start, stop = self.range
        chunk = max(1, self.per_second // 20)
        for first in range(start, stop, chunk):
            last = min(stop, first + chunk)
            stdin.write("".join(f'{{"x":{i},"y":{i % 97}}}\n' for i in range(first, last)).encode())
            stdin.flush()
            self.sent = last
            self._pace.wait(0.05)
        stdin.close()

    def finish(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert self.process.wait(timeout) == 0


def count(axis_id: int) -> int:
    """Points stored on an axis; -1 while the database cannot be read (it may be the fault)."""
    try:
        return int(Point.select().where(Point.axis == axis_id).count())
    except (pw.OperationalError, pw.InterfaceError):
        Point._meta.database.close()
        return -1


def exactly_once(axis_id: int, total: int, start: int = 0) -> None:
    """Every x in [start, start + total) stored once, nothing else."""
    xs = Point.select(pw.fn.COUNT(Point.id), pw.fn.COUNT(pw.fn.DISTINCT(Point.x)), pw.fn.MIN(Point.x),
                      pw.fn.MAX(Point.x)).where(Point.axis == axis_id)
    assert list(xs.tuples()) == [(total, total, start, start + total - 1)]


class DevicePublisher:
    """A device with paho: a persistent session, QoS 1, reconnecting by itself and sending again what the broker
    did not acknowledge. Publishes {"x": i, "y": i % 97} for i in [start, stop) at `per_second`; `acked()` are
    the x the broker acknowledged (those must all be stored, once)."""

    def __init__(self, host: str, port: int, topic: str, start: int, stop: int, per_second: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{start}", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        self.topic, self.range, self.per_second = topic, (start, stop), per_second
        self.sent = start
        self._infos: list[tuple[int, Any]] = []
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        start, stop = self.range
        chunk = max(1, self.per_second // 20)
        pace = threading.Event()
        for first in range(start, stop, chunk):
            for i in range(first, min(stop, first + chunk)):
                self._infos.append((i, self.client.publish(self.topic, f'{{"x":{i},"y":{i % 97}}}', qos=1)))
                self.sent = i + 1
            pace.wait(0.05)

    def acked(self) -> set[int]:
        return {x for x, info in list(self._infos) if info.is_published()}

    def finish(self, timeout: float = 120) -> None:
        """Until everything was sent and acknowledged."""
        self._thread.join(timeout)
        start, stop = self.range
        wait_for(lambda: len(self.acked()) == stop - start, timeout=timeout, what="every publish acknowledged")
        self.client.disconnect()
        self.client.loop_stop()


class ViewerProcess:
    """`rtdp viewer` in a process of its own on a fixed free port (so a restart keeps the URL)."""

    def __init__(self, broker: Mosquitto, db_url: str, workdir: Path, port: int, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = [
            sys.executable, "-m", "rtdp", "viewer", "--broker", broker.url, "--db", db_url,
            "--http", f"127.0.0.1:{port}", "--data-dir", str(workdir / "data"), *extra,
        ]
        self.log = workdir / f"viewer-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import httpx

        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, what=f"viewer on {self.port} ready")

    def stop(self) -> int:
        return terminate(self.process)


class ResumingReader:
    """A browser's EventSource in a thread: reads the stream, reconnects with Last-Event-ID whenever it ends
    (as browsers do), and keeps every event id in the order received."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: list[int] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        while not self._stop.is_set():
            headers = {"Last-Event-ID": str(self.ids[-1])} if self.ids else {}
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(5.0, read=3.0)) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"status {response.status_code}")
                    self.connections += 1
                    for line in response.iter_lines():
                        if line.startswith("id:"):
                            self.ids.append(int(line[3:].strip()))
                        if self._stop.is_set():
                            return
            except httpx.HTTPError:
                pass
            self._stop.wait(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
