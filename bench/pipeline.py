"""The whole pipeline against its raw baselines, measured in the same run (issue 2's performance targets).

    .venv/bin/python bench/pipeline.py [--quick] [--rounds 3]
        [--only embedded,layouts,bridge,postgres,http,history,serve_http,fanout]   [--only latency]

1. `rtdp serve` (embedded broker + bridge): points stored/s at QoS 1, one point per message, against the same
   embedded broker alone (`rtdp broker`) delivering mosquitto_pub -> mosquitto_sub at QoS 1.
   Then the embedded broker's layouts: `rtdp serve` on uvloop (the default) and on asyncio, and broker, bridge
   and viewer as three processes: points stored/s and latency, to pick the default.
2. A private Mosquitto + one `rtdp bridge` on SQLite: points stored/s, one point per message and arrays of 100,
   against mosquitto_pub -> mosquitto_sub through the same Mosquitto. Then the same on PostgreSQL (scaling out).
3. Latency publish -> SSE event at 1,000 points/s, for `rtdp serve` and for Mosquitto + bridge + viewer
   (`--only latency`: the `rtdp serve` row alone, `--rounds` times, on one fresh server).
4. The original URL /service/feed_input.json/<feed>/<axis>?y= (wrk) against a bare Starlette endpoint
   (bench/http_ingest.py), and no 200 for a point the broker did not acknowledge.
5. query_points(max_points=2000) over 1,000,000 points on SQLite (bench/store_bench.py).
6. `rtdp serve`'s original URL (wrk, one point per request) against InfluxDB 1.x's single-point /write, no 200
   for a point not stored, and reads right after a 200 (bench/http_serve.py; issue 16).
7. 1,000 SSE clients on one feed of one `rtdp serve` at increasing rates (bench/sse_fanout.py; issue 16).

Prints a table and writes bench/results/<timestamp>.json. The machine is shared: every figure is the median of
the rounds, and each baseline runs interleaved with what it is compared to, so the ratios are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import http_ingest  # noqa: E402
import store_bench  # noqa: E402

from tests.support.env import free_port, wait_for, wait_port  # noqa: E402
from tests.support.mosquitto import running_mosquitto  # noqa: E402

RESULTS = BENCH / "results"
RTDP = str(Path(sys.executable).parent / "rtdp")
PUB = shutil.which("mosquitto_pub") or "mosquitto_pub"
SUB = shutil.which("mosquitto_sub") or "mosquitto_sub"
EMAIL, PASSWORD, FEED = "bench@nothing.com", "bench-password", "bench"
BASE_X = 1.7e9  # epoch seconds: valid x for the feed's default datetime cast


@dataclass
class Row:
    """One line of the table: our median against the baseline's median in the same run."""

    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    baseline_name: str = ""
    target: str = ""
    check: Callable[[Row], bool] | None = None
    note: str = ""
    # CPU seconds of the measured process (the bridge, or rtdp serve) per 10,000 points, per round.
    cpu: list[float] = field(default_factory=list)

    def add(self, result: Stored) -> None:
        self.ours.append(result.rate)
        self.cpu.append(result.cpu_per_10k)

    @property
    def median(self) -> float:
        return statistics.median(self.ours) if self.ours else float("nan")

    @property
    def base_median(self) -> float:
        return statistics.median(self.baseline) if self.baseline else float("nan")

    @property
    def ratio(self) -> float:
        return self.median / self.base_median if self.baseline else float("nan")

    @property
    def met(self) -> bool | None:
        return self.check(self) if self.check and self.ours else None


# ---------------------------------------------------------------- processes and clients


@contextmanager
def process(command: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess logging to `log`, stopped (SIGTERM, then SIGKILL) when the block ends."""
    out = log.open("wb")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


# Where a run's points are stored: the SQLite file of a data dir, or a PostgreSQL URL.
Db = Path | str


def cli(data: Path, *args: str, db_url: str | None = None) -> str:
    db = ["--db", db_url] if db_url else []
    return subprocess.run([RTDP, *args, "--data-dir", str(data), *db], check=True, capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def prepare(data: Path, db_url: str | None = None) -> str:
    """A fresh data dir with a user, the feed `bench` and a token, made with the CLI; returns the token."""
    cli(data, "user", "add", EMAIL, "--password", PASSWORD, db_url=db_url)
    cli(data, "feed", "add", FEED, "--owner", EMAIL, db_url=db_url)
    return cli(data, "token", "add", EMAIL, db_url=db_url).splitlines()[-1]


def _query(db: Db, sql: str, arg: str) -> int:
    """One integer from SQLite (read-only, WAL) or PostgreSQL; 0 while the schema is not there yet."""
    if isinstance(db, str):
        import psycopg2

        conn = psycopg2.connect(db)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), (arg,))
                return int(cursor.fetchone()[0])
        except psycopg2.errors.UndefinedTable:
            return 0
        finally:
            conn.close()
    lite = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(lite.execute(sql, (arg,)).fetchone()[0])
    except sqlite3.OperationalError:  # schema not there yet
        return 0
    finally:
        lite.close()


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def args(self) -> list[str]:
        auth = ["-u", self.username, "-P", self.password or ""] if self.username else []
        return ["-h", self.host, "-p", str(self.port), "-q", "1", *auth]


def publish_one(broker: Broker, topic: str, payload: str) -> None:
    subprocess.run([PUB, *broker.args(), "-t", topic, "-m", payload], check=True, capture_output=True)


def write_lines(work: Path, tag: str, points: int, publishers: int, per_message: int) -> list[tuple[str, Path]]:
    """One file of payload lines per publisher (axis `<tag>p<i>`): JSON objects, or arrays of `per_message`."""
    files = []
    share = points // publishers
    for index in range(publishers):
        lines = []
        for first in range(0, share, per_message):
            items = [f'{{"x":{BASE_X + i:.3f},"y":{i % 97}}}' for i in range(first, min(share, first + per_message))]
            lines.append(items[0] if per_message == 1 else "[" + ",".join(items) + "]")
        path = work / f"{tag}p{index}.txt"
        path.write_text("\n".join(lines) + "\n")
        files.append((f"{tag}p{index}", path))
    return files


class Publishers:
    """Several `mosquitto_pub -l` (C publishers), one per file, started at once.

    Their stdin stays open until `close()`: the embedded amqtt broker drops the QoS 1 messages it has
    acknowledged but not yet delivered when the publisher disconnects (see `lost_on_disconnect`), so a
    publisher that exits right after its last line would measure that loss, not the throughput.
    """

    def __init__(self, broker: Broker, files: list[tuple[str, Path]], hold: bool = True) -> None:
        self.procs = []
        self.writers = []
        for axis, path in files:
            proc = subprocess.Popen([PUB, *broker.args(), "-t", f"feeds/{FEED}/{axis}", "-l"], stdin=subprocess.PIPE)
            self.procs.append(proc)
            writer = threading.Thread(target=self._feed, args=(proc, path.read_bytes(), hold), daemon=True)
            writer.start()
            self.writers.append(writer)

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], data: bytes, hold: bool) -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.flush()
        if not hold:
            proc.stdin.close()

    def close(self) -> None:
        for writer in self.writers:
            writer.join(600)
        for proc in self.procs:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
            if proc.wait(600) != 0:
                raise RuntimeError(f"mosquitto_pub exited with {proc.returncode}")


def stored(db: Db, prefix: str) -> int:
    """Points stored on the axes whose name starts with `prefix` (read straight from the database): the
    exact count, which scans every such point. For the end of a run, not for polling."""
    return _query(db, "SELECT count(*) FROM point JOIN axis ON point.axis_id = axis.id WHERE axis.name LIKE ?",
                  prefix + "%")


class Progress:
    """Polls how many points the axes `<prefix>*` hold from their `point_count`, which write_points keeps
    current in the same transaction as the points: a few rows of the axis table per poll, where counting
    the points themselves costs more on every poll as the table grows, on the cores the bridge is using."""

    def __init__(self, db: Db, prefix: str) -> None:
        self.prefix = prefix + "%"
        self.conn: Any
        if isinstance(db, str):
            import psycopg2

            self.conn = psycopg2.connect(db)
            self.conn.autocommit = True
        else:
            self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)

    def count(self) -> int:
        cursor = self.conn.cursor()
        placeholder = "%s" if not isinstance(self.conn, sqlite3.Connection) else "?"
        cursor.execute(f"SELECT coalesce(sum(point_count), 0) FROM axis WHERE name LIKE {placeholder}",
                       (self.prefix,))
        return int(cursor.fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of some processes so far (Linux /proc), summed; 0 without pids."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Stored:
    rate: float  # points/s from the first publish until the last point was committed
    cpu_per_10k: float  # CPU seconds the measured processes spent per 10,000 points in that time


def stored_rate(broker: Broker, db: Db, work: Path, tag: str, points: int, publishers: int,
                per_message: int = 1, pids: Sequence[int] = ()) -> Stored:
    """Points/s from the first publish until the database holds all of them (committed)."""
    files = write_lines(work, tag, points, publishers, per_message)
    expected = (points // publishers) * publishers
    progress = Progress(db, tag)
    cpu = cpu_seconds(pids)
    started = time.perf_counter()
    pubs = Publishers(broker, files)
    try:
        wait_for(lambda: progress.count() >= expected, 120, interval=0.02, what=f"{expected} points stored ({tag})")
    finally:
        elapsed = time.perf_counter() - started
        used = cpu_seconds(pids) - cpu
        progress.close()
        pubs.close()
    exact = stored(db, tag)
    if exact != expected:
        raise RuntimeError(f"{tag}: the axes count {expected} points but {exact} are stored")
    return Stored(expected / elapsed, 10_000 * used / expected)


def lost_on_disconnect(broker: Broker, db: Db, work: Path, tag: str, points: int) -> int:
    """Points never stored when one `mosquitto_pub -l` exits right after its last publish (all PUBACKed)."""
    files = write_lines(work, tag, points, 1, 1)
    Publishers(broker, files, hold=False).close()
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 3:  # settled: no new point for 3 s
        count = stored(db, tag)
        if count != last:
            last, stable_since = count, time.monotonic()
        time.sleep(0.1)
    return points - last


def wait_stored_probe(broker: Broker, db: Db, timeout: float = 60) -> None:
    """Publish a probe point until it is stored: the bridge is subscribed and the axis machinery warm."""
    deadline = time.monotonic() + timeout
    while stored(db, "probe") == 0:
        publish_one(broker, f"feeds/{FEED}/probe", f'{{"x":{time.time():.6f},"y":0}}')
        if time.monotonic() > deadline:
            raise RuntimeError("nothing was stored: see the logs in the work dir")
        time.sleep(0.2)


class Subscriber:
    """A `mosquitto_sub` at QoS 1 on feeds/<feed>/#, counting the messages it prints (one line each)."""

    def __init__(self, broker: Broker, topic: str = f"feeds/{FEED}/#") -> None:
        self.count = 0
        self.proc = subprocess.Popen([SUB, *broker.args(), "-t", topic, "-i", f"bench-sub-{time.time_ns()}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.count == 0:  # subscribed once a probe comes through
            publish_one(broker, f"feeds/{FEED}/probe", "1")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub never received the probe")
            time.sleep(0.1)

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for _ in stream:
            self.count += 1

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def delivered_rate(broker: Broker, sub: Subscriber, work: Path, tag: str, points: int, publishers: int) -> float:
    """Messages/s from the first publish until the subscriber printed all of them (the raw baseline)."""
    files = write_lines(work, tag, points, publishers, 1)
    expected = (points // publishers) * publishers
    base = sub.count
    started = time.perf_counter()
    pubs = Publishers(broker, files)
    try:
        wait_for(lambda: sub.count - base >= expected, 120, interval=0.005, what=f"{expected} messages delivered")
    finally:
        elapsed = time.perf_counter() - started
        pubs.close()
    return expected / elapsed


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------- 1. rtdp serve against its own broker alone


def bench_embedded(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    row = rows["embedded"]
    serve_data, broker_data = work / "serve", work / "broker"
    serve_token, broker_token = prepare(serve_data), prepare(broker_data)
    mqtt_port, http_port, broker_port = free_port(), free_port(), free_port()
    serve_cmd = [RTDP, "serve", "--data-dir", str(serve_data), "--http", f"127.0.0.1:{http_port}",
                 "--mqtt", f"127.0.0.1:{mqtt_port}", "--log-level", "warning"]
    broker_cmd = [RTDP, "broker", "--data-dir", str(broker_data), "--mqtt", f"127.0.0.1:{broker_port}",
                  "--log-level", "warning"]
    with process(serve_cmd, work / "serve.log") as serve, process(broker_cmd, work / "broker.log"):
        wait_port("127.0.0.1", mqtt_port, 60)
        wait_port("127.0.0.1", broker_port, 60)
        ours = Broker("127.0.0.1", mqtt_port, "bench", serve_token)
        alone = Broker("127.0.0.1", broker_port, "bench", broker_token)
        db = serve_data / "rtdp.sqlite3"
        wait_stored_probe(ours, db)
        sub = Subscriber(alone)
        try:
            for r in range(args.rounds):  # interleaved: load from other jobs hits both alike
                row.add(stored_rate(ours, db, work, f"e{r}", args.embedded_points, args.publishers, pids=[serve.pid]))
                row.baseline.append(delivered_rate(alone, sub, work, f"b{r}", args.embedded_points, args.publishers))
                arrays = rows["embedded_batch"]
                arrays.add(stored_rate(ours, db, work, f"ea{r}", args.batch_points // 2, args.publishers, 100,
                                       pids=[serve.pid]))
                arrays.baseline.append(row.baseline[-1])
                print(f"  embedded round {r}: serve {row.ours[-1]:,.0f} points/s ({row.cpu[-1]:.2f} CPU s/10k), "
                      f"arrays of 100 {arrays.ours[-1]:,.0f} points/s ({arrays.cpu[-1]:.3f} CPU s/10k), "
                      f"broker alone {row.baseline[-1]:,.0f} msg/s", flush=True)
        finally:
            sub.close()
        lost = rows["embedded_lost"]
        lost.ours.append(float(lost_on_disconnect(ours, db, work, "lost", 2000)))
        lost.note = f"{lost.ours[-1]:.0f} of 2000 points PUBACKed but never stored"
        print(f"  publisher disconnecting at once: {lost.note}", flush=True)
        if args.profile:
            profile(serve.pid, work / "serve-profile.txt", lambda: stored_rate(
                ours, db, work, "prof", args.embedded_points, args.publishers))
            profile(serve.pid, work / "serve-arrays-profile.txt", lambda: stored_rate(
                ours, db, work, "parr", args.batch_points // 2, args.publishers, 100))
        bench_latency(work, args, rows["latency_serve"], ours, f"http://127.0.0.1:{http_port}", serve_token)


# ---------------------------------------------------------------- 2. Mosquitto + rtdp bridge


@contextmanager
def mosquitto_stack(work: Path, viewer: bool, db_url: str | None = None) -> Iterator[tuple[Broker, Db, str, str, int]]:
    """A private Mosquitto, one `rtdp bridge` on SQLite (or `db_url`) and optionally `rtdp viewer`:
    (broker, db, the viewer's URL or "", token, the bridge's pid)."""
    data = work / "data"
    token = prepare(data, db_url)
    db: Db = db_url or data / "rtdp.sqlite3"
    url_of_db = db_url or f"sqlite:///{db}"
    with running_mosquitto(work / "mosquitto") as mosq:
        broker = Broker(mosq.host, mosq.port)
        bridge_cmd = [RTDP, "bridge", "--broker", mosq.url, "--db", url_of_db, "--data-dir", str(data),
                      "--client-id", "bench-bridge", "--log-level", "warning"]
        http_port = free_port()
        viewer_cmd = [RTDP, "viewer", "--broker", mosq.url, "--db", url_of_db, "--data-dir", str(data),
                      "--http", f"127.0.0.1:{http_port}", "--log-level", "warning"]
        with process(bridge_cmd, work / "bridge.log") as bridge:
            wait_stored_probe(broker, db)
            if not viewer:
                yield broker, db, "", token, bridge.pid
                return
            with process(viewer_cmd, work / "viewer.log"):
                url = f"http://127.0.0.1:{http_port}"
                wait_for(lambda: ready(f"{url}/readyz"), 60, interval=0.1, what="viewer ready")
                yield broker, db, url, token, bridge.pid


def bench_bridge(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    with mosquitto_stack(work / "bridge", viewer=False) as (broker, db, _, _, bridge_pid):
        bridge_rounds("bridge", rows["bridge_single"], rows["bridge_batch"], broker, db, work, args, bridge_pid)
        if args.profile:
            profile(bridge_pid, work / "bridge-profile.txt",
                    lambda: stored_rate(broker, db, work, "prof", args.single_points, args.publishers))
            profile(bridge_pid, work / "bridge-arrays-profile.txt",
                    lambda: stored_rate(broker, db, work, "parr", args.batch_points, args.publishers, 100))
    with mosquitto_stack(work / "latency", viewer=True) as (broker, _, url, token, _):
        bench_latency(work, args, rows["latency_mosquitto"], broker, url, token)


def bench_postgres(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    """Scaling out: the bridge section's two rows with `rtdp bridge` on PostgreSQL (a throwaway database on
    the machine's server, dropped afterwards), against Mosquitto pub->sub measured in the same rounds."""
    from tests.support.postgres import available, throwaway_database

    reason = available()
    if reason:
        print(f"  skipped: {reason}", flush=True)
        return
    with throwaway_database() as url, mosquitto_stack(work / "pg", viewer=False, db_url=url) as (
            broker, db, _, _, bridge_pid):
        bridge_rounds("postgres", rows["pg_single"], rows["pg_batch"], broker, db, work, args, bridge_pid)


def bridge_rounds(label: str, single: Row, batched: Row, broker: Broker, db: Db, work: Path,
                  args: argparse.Namespace, bridge_pid: int) -> None:
    """The bridge's two rows (one point per message, arrays of 100) against Mosquitto pub->sub, the
    three interleaved round by round."""
    sub = Subscriber(broker)
    try:
        for r in range(args.rounds):
            single.add(stored_rate(broker, db, work, f"s{r}", args.single_points, args.publishers,
                                   pids=[bridge_pid]))
            raw = delivered_rate(broker, sub, work, f"m{r}", args.single_points, args.publishers)
            single.baseline.append(raw)
            batched.baseline.append(raw)
            batched.add(stored_rate(broker, db, work, f"a{r}", args.batch_points, args.publishers, 100,
                                    pids=[bridge_pid]))
            print(f"  {label} round {r}: single {single.ours[-1]:,.0f} points/s ({single.cpu[-1]:.2f} CPU s/10k), "
                  f"arrays of 100 {batched.ours[-1]:,.0f} points/s ({batched.cpu[-1]:.3f} CPU s/10k), "
                  f"raw pub->sub {raw:,.0f} msg/s", flush=True)
    finally:
        sub.close()


# ---------------------------------------------------------------- 3. latency publish -> SSE


def bench_latency(work: Path, args: argparse.Namespace, row: Row, broker: Broker, url: str, token: str) -> None:
    """Publish at `args.rate` points/s (paho, QoS 1, x = publish time) and time each SSE event's arrival.

    The SSE client runs in a process of its own (bench/sse_fanout.py's, one stream): in this one its reading
    thread waited for the GIL behind paho's and the publishing loop, which the measure then counted."""
    import sse_fanout  # it imports this module: not at the top

    from rtdp.mqtt import Endpoint, make_client

    axis = f"lat{time.time_ns() % 10**6}"
    reader = sse_fanout.Readers(url, token, 1, 1)
    try:
        wait_for(lambda: reader.connected() >= 1, 30, interval=0.1, what="the SSE stream to open")
        client = make_client(Endpoint(broker.host, broker.port, broker.username, broker.password),
                             f"bench-lat-{time.time_ns()}", max_inflight=100)
        client.connect(broker.host, broker.port)
        client.loop_start()
        topic = f"feeds/{FEED}/{axis}"

        def send() -> None:
            info = client.publish(topic, f'{{"x":{time.time():.6f},"y":1}}', qos=1)
            if info.rc != 0:
                raise RuntimeError(f"publish failed: {info.rc}")

        try:
            def warm() -> bool:
                send()
                return bool(reader.report()["delivered"])

            wait_for(warm, 30, interval=0.2, what="the first SSE event (axis created)")
            time.sleep(0.5)  # the warm-up points' events are in before the reset
            reader.reset()
            count = int(args.latency_seconds * args.rate)
            sent_for = paced(count, args.rate, lambda _: send())
            try:
                wait_for(lambda: reader.report()["delivered"] >= count, 10, interval=0.2, what="every SSE event")
            except AssertionError:
                pass
            got = reader.report(values=True)
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        reader.close()
    values = sorted(got["values"])
    if not values:
        raise RuntimeError("no SSE event received")
    p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
    row.ours.append(p50)
    row.baseline.append(p99)
    row.note = f"{len(values)} of {count} events, sent at {count / sent_for:,.0f}/s"
    print(f"  latency {row.name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {values[-1]:.1f} ms ({row.note})",
          flush=True)


# ---------------------------------------------------------------- 3b. one process or three, uvloop or asyncio


LAYOUTS = ("uvloop", "asyncio", "split")


@contextmanager
def layout_stack(work: Path, layout: str) -> Iterator[tuple[Broker, Path, str, str, list[int]]]:
    """The embedded broker three ways: `rtdp serve` on uvloop (the default) or on asyncio (`--loop`), or
    `rtdp broker` + `rtdp bridge` + `rtdp viewer` as three processes (uvloop) on one data dir.
    Yields (broker, db, the viewer's URL, token, the pids whose CPU is counted)."""
    data = work / layout
    token = prepare(data)
    db = data / "rtdp.sqlite3"
    mqtt_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    common = ["--data-dir", str(data), "--log-level", "warning"]
    http, mqtt = ["--http", f"127.0.0.1:{http_port}"], ["--mqtt", f"127.0.0.1:{mqtt_port}"]
    broker = Broker("127.0.0.1", mqtt_port, "bench", token)
    with contextlib.ExitStack() as stack:
        if layout == "split":
            procs = [stack.enter_context(process([RTDP, "broker", *mqtt, *common], work / f"{layout}-broker.log"))]
            wait_port("127.0.0.1", mqtt_port, 60)
            procs.append(stack.enter_context(process(
                [RTDP, "bridge", *mqtt, "--client-id", "bench-split", *common], work / f"{layout}-bridge.log")))
            procs.append(stack.enter_context(process([RTDP, "viewer", *mqtt, *http, *common],
                                                     work / f"{layout}-viewer.log")))
        else:
            procs = [stack.enter_context(process([RTDP, "serve", "--loop", layout, *mqtt, *http, *common],
                                                 work / f"{layout}-serve.log"))]
            wait_port("127.0.0.1", mqtt_port, 60)
        wait_stored_probe(broker, db)
        wait_for(lambda: ready(f"{url}/readyz"), 60, interval=0.1, what=f"viewer ready ({layout})")
        yield broker, db, url, token, [proc.pid for proc in procs]


def bench_layouts(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    """The issue's question for the embedded broker: does uvloop, or three processes on the two cores, store
    more? All three run at once, idle but for the one measured, rounds interleaved; then each one's latency."""
    with contextlib.ExitStack() as stack:
        stacks = {layout: stack.enter_context(layout_stack(work, layout)) for layout in LAYOUTS}
        for r in range(args.rounds):
            for layout, (broker, db, _, _, pids) in stacks.items():
                rows[f"layout_{layout}"].add(stored_rate(broker, db, work, f"{layout[0]}{r}", args.embedded_points,
                                                         args.publishers, pids=pids))
            default = rows["layout_uvloop"].ours[-1]
            for layout in LAYOUTS:
                rows[f"layout_{layout}"].baseline.append(default)
            print(f"  layouts round {r}: " + ", ".join(
                f"{layout} {rows[f'layout_{layout}'].ours[-1]:,.0f} points/s "
                f"({rows[f'layout_{layout}'].cpu[-1]:.2f} CPU s/10k)" for layout in LAYOUTS), flush=True)
        for layout, (broker, _, url, token, _) in stacks.items():
            bench_latency(work, args, rows[f"layout_latency_{layout}"], broker, url, token)


# ---------------------------------------------------------------- 4. HTTP ingestion (bench/http_ingest.py)


def bench_http(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    row, acked = rows["http"], rows["http_unacked"]
    data = work / "http" / "data"
    token = prepare(data)
    cli(data, "axis", "add", FEED, "a")
    with running_mosquitto(work / "http" / "mosquitto") as mosq:
        broker = Broker(mosq.host, mosq.port)
        sub = Subscriber(broker)
        bare_port, viewer_port = free_port(), free_port()
        with process([sys.executable, "-c", http_ingest.BARE, str(bare_port)], work / "bare.log"), \
                process([sys.executable, "-c", http_ingest.VIEWER, str(data), mosq.url, str(viewer_port)],
                        work / "http-viewer.log") as viewer:
            bare_url = f"http://127.0.0.1:{bare_port}/bare?x=1&y=2"
            ingest_url = f"http://127.0.0.1:{viewer_port}/service/feed_input.json/{FEED}/a?y=1"
            wait_for(lambda: ready(bare_url), 30, interval=0.1, what="bare server")
            wait_for(lambda: ready(f"http://127.0.0.1:{viewer_port}/readyz"), 30, interval=0.1, what="viewer")
            oks = seen = 0
            for _ in range(args.rounds):
                bare_rate, _, _ = http_ingest.wrk(bare_url, args.http_seconds, args.connections)
                base = sub.count
                rate, total, bad = http_ingest.wrk(ingest_url, args.http_seconds, args.connections, token)
                # every 200 must be a point the broker has: the subscriber sees at least as many
                try:
                    wait_for(lambda: sub.count - base >= total - bad, 10, what="acknowledged points")  # noqa: B023
                except AssertionError:
                    pass
                oks += total - bad
                seen += sub.count - base
                row.ours.append(rate)
                row.baseline.append(bare_rate)
            if args.profile:
                profile(viewer.pid, work / "http-viewer-profile.txt",
                        lambda: http_ingest.wrk(ingest_url, 5, args.connections, token))
            mosq.process.send_signal(signal.SIGSTOP)  # a frozen broker acknowledges nothing: no 200 allowed
            try:
                _, frozen_total, frozen_bad = http_ingest.wrk(ingest_url, args.frozen_seconds, args.connections, token)
            finally:
                mosq.process.send_signal(signal.SIGCONT)
            frozen_ok = frozen_total - frozen_bad
            acked.ours.append(float(max(0, oks - seen) + frozen_ok))
            acked.note = (f"200s {oks}, points seen by a subscriber {seen}; broker frozen: {frozen_ok} 200s "
                          f"of {frozen_total} answers")
            print(f"  {acked.note}", flush=True)
        sub.close()


# ---------------------------------------------------------------- 5. history (bench/store_bench.py)


def bench_history(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    from rtdp.store import query_points

    row = rows["history"]
    db, axis = store_bench.fill_axis(f"sqlite:///{work / 'history.sqlite3'}", args.history_points)
    scan = "SELECT MIN(y), MAX(y) FROM point WHERE axis_id = ?"
    for _ in range(max(args.rounds, 5)):
        row.ours.append(1000 * store_bench.timed(lambda: query_points(axis, max_points=2000)))
        row.baseline.append(1000 * store_bench.timed(lambda: db.execute_sql(scan, (axis.id,)).fetchall()))  # type: ignore[no-untyped-call]
    got = query_points(axis, max_points=2000)
    assert any(y == 1000.0 for _, _, y in got), "the spike must survive downsampling"
    db.close()
    print(f"  history: {row.median:.1f} ms (floor {row.base_median:.1f} ms)", flush=True)


# ---------------------------------------------------------------- profiling a miss


def paced(count: int, rate: float, send: Callable[[int], object]) -> float:
    """`send(0)` .. `send(count - 1)` at `rate` per second, each on its own schedule (a late one does not
    shift the rest); returns the seconds it took."""
    started = time.perf_counter()
    for index in range(count):
        ahead = started + index / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        send(index)
    return time.perf_counter() - started


def profile(pid: int, out: Path, load: Callable[[], object]) -> None:
    """py-spy the process (and its threads) while `load` runs; write the top functions to `out`."""
    with spying(pid, out):
        load()


@contextmanager
def spying(pid: int, out: Path) -> Iterator[None]:
    """py-spy the process (and its threads) during the block; write the top functions to `out`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = out.with_suffix(".folded")
    rec = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "-o", str(raw),
                            "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        yield
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    if not raw.exists():
        print(f"  py-spy wrote nothing for {pid} (ptrace not permitted?)")
        return
    summarize(raw, out)


def summarize(raw: Path, out: Path) -> None:
    """py-spy's raw (folded) samples in `raw` as the top functions, self and inclusive, in `out`."""
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        total += int(samples)
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + int(samples)
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + int(samples)
    lines = [f"{total} samples"]
    for title, counts, top in (("top self:", self_count, 25), ("top inclusive:", incl, 40)):
        lines.append(title)
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        lines += [f"  {100 * n / total:5.1f}%  {f[:160]}" for f, n in ranked]
    out.write_text("\n".join(lines) + "\n")
    print(f"  profile written to {out}")


# ---------------------------------------------------------------- main


def make_rows() -> dict[str, Row]:
    return {
        "embedded": Row("rtdp serve, QoS 1, 1 point/msg, stored", "points/s",
                        baseline_name="rtdp broker alone pub->sub",
                        target="ratio >= 0.8", check=lambda r: r.ratio >= 0.8),
        "embedded_batch": Row("rtdp serve, QoS 1, arrays of 100, stored", "points/s",
                              baseline_name="rtdp broker alone pub->sub (msg/s)"),
        "embedded_lost": Row("rtdp serve, points lost when the publisher exits at once", "points of 2000",
                             target="0", check=lambda r: r.median == 0),
        "bridge_single": Row("Mosquitto + bridge, 1 point/msg, stored", "points/s",
                             baseline_name="Mosquitto pub->sub (msg/s)", target=">= 15,000/s",
                             check=lambda r: r.median >= 15_000),
        "bridge_batch": Row("Mosquitto + bridge, arrays of 100, stored", "points/s",
                            baseline_name="Mosquitto pub->sub (msg/s)", target=">= 100,000/s",
                            check=lambda r: r.median >= 100_000),
        "pg_single": Row("Mosquitto + bridge on PostgreSQL, 1 point/msg", "points/s",
                         baseline_name="Mosquitto pub->sub (msg/s)"),
        "pg_batch": Row("Mosquitto + bridge on PostgreSQL, arrays of 100", "points/s",
                        baseline_name="Mosquitto pub->sub (msg/s)"),
        "latency_serve": Row("latency pub->SSE, rtdp serve (p50 | p99)", "ms", baseline_name="p99",
                             target="p50 <= 20, p99 <= 50",
                             check=lambda r: r.median <= 20 and r.base_median <= 50),
        "latency_mosquitto": Row("latency pub->SSE, Mosquitto+bridge+viewer (p50 | p99)", "ms", baseline_name="p99",
                                 target="p50 <= 20, p99 <= 50",
                                 check=lambda r: r.median <= 20 and r.base_median <= 50),
        "layout_uvloop": Row("rtdp serve on uvloop (default), 1 point/msg, stored", "points/s",
                             baseline_name="the same"),
        "layout_asyncio": Row("rtdp serve --loop asyncio, stored", "points/s", baseline_name="on uvloop"),
        "layout_split": Row("rtdp broker + bridge + viewer (3 processes), stored", "points/s",
                            baseline_name="serve on uvloop"),
        "layout_latency_uvloop": Row("latency pub->SSE, serve on uvloop (p50 | p99)", "ms", baseline_name="p99"),
        "layout_latency_asyncio": Row("latency pub->SSE, serve on asyncio (p50 | p99)", "ms", baseline_name="p99"),
        "layout_latency_split": Row("latency pub->SSE, 3 processes (p50 | p99)", "ms", baseline_name="p99"),
        "http": Row("HTTP feed_input.json, 1 point/request", "req/s", baseline_name="bare Starlette",
                    target="ratio >= 0.5", check=lambda r: r.ratio >= 0.5),
        "http_unacked": Row("HTTP 200s for unacknowledged points", "count", target="0", check=lambda r: r.median == 0),
        "history": Row("query_points max_points=2000 over 1M (SQLite)", "ms", baseline_name="SELECT MIN,MAX floor",
                       target="<= 150 ms", check=lambda r: r.median <= 150),
    }


def print_table(rows: dict[str, Row]) -> str:
    head = ("measure", "ours (median)", "baseline (median)", "ratio", "target", "met")
    lines = []
    for row in rows.values():
        if not row.ours:
            continue
        latency = row.unit == "ms" and row.baseline_name == "p99"
        ours = f"{row.median:,.1f} | {row.base_median:,.1f} ms" if latency else f"{row.median:,.1f} {row.unit}"
        if row.cpu:
            ours += f" ({statistics.median(row.cpu):.3f} CPU s/10k)"
        base = "" if latency or not row.baseline else f"{row.base_median:,.1f}"
        ratio = "" if latency or not row.baseline else f"{row.ratio:.2f}"
        met = {True: "met", False: "NOT met", None: ""}[row.met]
        lines.append((row.name, ours, f"{base} ({row.baseline_name})" if base else "", ratio, row.target, met))
    table = [head, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    out = []
    for index, line in enumerate(table):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("| " + " | ".join("-" * w for w in widths) + " |")
    text = "\n".join(out)
    print(text)
    return text


SECTIONS = ("embedded", "latency", "layouts", "bridge", "postgres", "http", "history", "serve_http", "fanout")


def bench_serve_http(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    import http_serve  # it imports this module: not at the top

    http_serve.section(work, args, rows)


def bench_serve_latency(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    """Section 3's `rtdp serve` row alone, `args.rounds` times on one fresh server (`embedded` ends with it too)."""
    data = work / "serve"
    token = prepare(data)
    mqtt_port, http_port = free_port(), free_port()
    command = [RTDP, "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
               "--mqtt", f"127.0.0.1:{mqtt_port}", "--log-level", "warning"]
    with process(command, work / "serve.log"):
        wait_port("127.0.0.1", mqtt_port, 60)
        ours = Broker("127.0.0.1", mqtt_port, "bench", token)
        wait_stored_probe(ours, data / "rtdp.sqlite3")
        for _ in range(args.rounds):
            bench_latency(work, args, rows["latency_serve"], ours, f"http://127.0.0.1:{http_port}", token)


def bench_fanout(work: Path, args: argparse.Namespace, rows: dict[str, Row]) -> None:
    import sse_fanout  # it imports this module: not at the top

    sse_fanout.section(work, args, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--only", default=",".join(s for s in SECTIONS if s != "latency"),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (latency: only in --only)")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="py-spy rtdp serve and the bridge under load")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, databases)")
    args = parser.parse_args()
    quick = args.quick
    args.rounds = args.rounds or 3
    args.embedded_points = 6_000 if quick else 20_000
    args.single_points = 20_000 if quick else 60_000
    args.batch_points = 100_000 if quick else 400_000
    args.rate = 1000
    args.latency_seconds = 4 if quick else 10
    args.http_seconds = 3 if quick else 8
    args.frozen_seconds = 7 if quick else 10  # above the viewer's 5 s PUBACK wait
    args.connections = 50
    args.history_points = 1_000_000
    args.fanout_clients = 1000
    args.fanout_rates = (10, 50, 100) if quick else (10, 25, 50, 100)
    args.fanout_seconds = 4 if quick else 8
    args.fanout_processes = 2
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    load_before = os.getloadavg()
    started = time.time()
    print(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"{os.cpu_count()} CPUs; rounds {args.rounds}{' (quick)' if quick else ''}", flush=True)
    rows = make_rows()
    work = Path(tempfile.mkdtemp(prefix="rtdp-pipeline-"))
    try:
        for section in sections:
            print(f"{section}:", flush=True)
            {"embedded": bench_embedded, "latency": bench_serve_latency, "layouts": bench_layouts,
             "bridge": bench_bridge, "postgres": bench_postgres, "http": bench_http, "history": bench_history,
             "serve_http": bench_serve_http, "fanout": bench_fanout}[section](
                work / section, args, rows)
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\n{time.time() - started:.0f} s; load average now {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}")
    table = print_table(rows)
    when = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(started))
    result = {
        "when": when,
        "quick": quick,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": time.time() - started,
        "settings": {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)},
        "rows": {
            key: {"name": r.name, "unit": r.unit, "ours": r.ours, "baseline": r.baseline,
                  "baseline_name": r.baseline_name, "median": r.median if r.ours else None,
                  "baseline_median": r.base_median if r.baseline else None,
                  "ratio": r.ratio if r.ours and r.baseline else None, "target": r.target, "met": r.met,
                  "note": r.note, "cpu_seconds_per_10k": r.cpu,
                  "cpu_seconds_per_10k_median": statistics.median(r.cpu) if r.cpu else None}
            for key, r in rows.items()
        },
        "table": table,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{when}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
