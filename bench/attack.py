"""Issue 11's acceptance: each availability attack against a fresh `rtdp serve`, beside a well-behaved user.

    .venv/bin/python bench/attack.py [--seconds 60] [--only header,idle-mqtt,...] [--keep]

For every attack: a fresh data dir (a good user with the feed `bench` and a token, an attacker with the feed
`attack` and a token, made with the CLI), `rtdp serve` on free loopback ports under a limit of 1,024 open
files, then for `--seconds`: the good user publishes 100 points/s at QoS 1 over MQTT and loads a page and an
API call over HTTP every 0.2 s, while the attack runs in a process of its own from 127.0.0.2 (bounded
loops on loopback only). Then the attack stops and the table gives, per attack:

- the good user's p99 latency: PUBACK after publish, and HTTP responses (a failed request counts as the
  whole timeout);
- the server's peak RSS (sampled every 0.2 s);
- points acknowledged to the good user against points stored (waited for up to 30 s after the attack);
- seconds until `/readyz` answers 200 after the attack.

The issue's targets: p99 under 100 ms, RSS under 300 MB, stored == acknowledged, /readyz within 5 s.
Writes bench/results/attack-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from pipeline import BASE_X, FEED, RESULTS, RTDP, cli, prepare, process, ready, stored  # noqa: E402

from rtdp.mqtt import Endpoint, make_client  # noqa: E402
from tests.broker.raw import connect, publish, subscribe  # noqa: E402
from tests.support.env import free_port, wait_for  # noqa: E402

ATTACKER, ATTACKER_PASSWORD, ATTACK_FEED = "attacker@nothing.com", "attacker-password", "attack"
ATTACK_SOURCE = "127.0.0.2"  # another address on loopback: the per-address caps tell it from the good user
GOOD_RATE = 100.0  # points/s
PAGE_INTERVAL = 0.2
HTTP_TIMEOUT = 10.0
OPEN_FILES = 1024  # the server's limit, as in the runs


@dataclass(frozen=True)
class Target:
    http_port: int
    mqtt_port: int
    token: str  # the attacker's


# ---------------------------------------------------------------- the attacks (run in a worker process)


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACK_SOURCE, 0))


async def _until(deadline: float, workers: int, one: Callable[[], Awaitable[None]]) -> None:
    """`workers` loops of `one()` until the deadline; a refused or dropped connection just goes round again."""

    async def loop() -> None:
        while time.monotonic() < deadline:
            try:
                await one()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(loop()) for _ in range(workers)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), deadline - time.monotonic() + 5)
    for task in tasks:
        task.cancel()


async def attack_header(target: Target, deadline: float) -> None:
    """#1: endless request headers, 4 connections, up to 256 MB each."""
    chunk = b"X-Pad: " + b"a" * (1 << 20) + b"\r\n"

    async def one() -> None:
        _, writer = await _open(target.http_port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            for _ in range(256):
                if time.monotonic() > deadline:
                    return
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

    await _until(deadline, 4, one)


async def _hold_idle(port: int, deadline: float, count: int, hello: bytes = b"") -> None:
    async def one() -> None:
        reader, writer = await _open(port)
        try:
            if hello:
                writer.write(hello)
            await reader.read()  # until the server closes it, or the attack ends
        finally:
            writer.close()

    await _until(deadline, count, one)


async def attack_idle_http(target: Target, deadline: float) -> None:
    """#2: 1,100 idle HTTP connections, reopened as they are closed."""
    await _hold_idle(target.http_port, deadline, 1100)


async def attack_idle_mqtt(target: Target, deadline: float) -> None:
    """#2: 1,100 idle MQTT connections that never send CONNECT, reopened as they are closed."""
    await _hold_idle(target.mqtt_port, deadline, 1100)


async def attack_close_early(target: Target, deadline: float) -> None:
    """#2: connections closed before CONNECT (they stayed in CLOSE-WAIT), as fast as 50 loops go."""

    async def one() -> None:
        _, writer = await _open(target.mqtt_port)
        writer.close()

    await _until(deadline, 50, one)


async def _mqtt_session(port: int, token: str, client_id: str, clean: bool = True) -> tuple[Any, Any]:
    reader, writer = await _open(port)
    writer.write(connect("attacker", token, client_id=client_id, clean=clean))
    connack = await asyncio.wait_for(reader.readexactly(4), 30)
    if connack[3] != 0:
        writer.close()
        raise OSError(f"CONNACK {connack[3]}")
    return reader, writer


async def attack_big_publish(target: Target, deadline: float) -> None:
    """#3: 64 MB QoS 1 publishes, 4 connections."""
    payload = b"1" * (64 << 20)

    async def one() -> None:
        reader, writer = await _mqtt_session(target.mqtt_port, target.token, f"big-{id(payload)}-{time.time()}")
        try:
            writer.write(publish(f"feeds/{ATTACK_FEED}/x", payload, qos=1))
            await writer.drain()
            await asyncio.wait_for(reader.read(4), max(0.1, deadline - time.monotonic()))
        finally:
            writer.close()

    await _until(deadline, 4, one)


async def attack_no_read(target: Target, deadline: float) -> None:
    """#3: QoS 1 publishes sent flat out by clients that never read their PUBACKs, 4 connections."""
    batch = b"".join(publish(f"feeds/{ATTACK_FEED}/x", b"1", qos=1, packet_id=i + 1) for i in range(1000))

    async def one() -> None:
        _, writer = await _mqtt_session(target.mqtt_port, target.token, f"noread-{time.time()}")
        try:
            while time.monotonic() < deadline:
                writer.write(batch)
                await asyncio.wait_for(writer.drain(), max(0.1, deadline - time.monotonic()))
        finally:
            writer.close()

    await _until(deadline, 4, one)


async def attack_sessions(target: Target, deadline: float) -> None:
    """#3: 2,000 persistent sessions subscribed to the attacker's feed, then offline, then a publish flood."""
    created = 0
    for index in range(2000):
        if time.monotonic() > deadline:
            return
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            reader, writer = await _mqtt_session(target.mqtt_port, target.token, f"sleeper-{index}", clean=False)
            writer.write(subscribe(f"feeds/{ATTACK_FEED}/#"))
            await asyncio.wait_for(reader.readexactly(5), 30)
            writer.write(b"\xe0\x00")  # DISCONNECT
            writer.close()
            created += 1
    await attack_flood(target, deadline)


async def attack_flood(target: Target, deadline: float) -> None:
    """#4: QoS 1 publishes as fast as 4 clients go, each reading its PUBACKs (up to 1,000,000)."""
    batch = b"".join(publish(f"feeds/{ATTACK_FEED}/x", b"1", qos=1, packet_id=i + 1) for i in range(100))

    async def one() -> None:
        reader, writer = await _mqtt_session(target.mqtt_port, target.token, f"flood-{time.time()}")
        try:
            for _ in range(2500):
                if time.monotonic() > deadline:
                    return
                writer.write(batch)
                await asyncio.wait_for(reader.readexactly(400), max(0.1, deadline - time.monotonic()))
        finally:
            writer.close()

    await _until(deadline, 4, one)


async def attack_logins(target: Target, deadline: float) -> None:
    """#7: password guesses on MQTT CONNECT, the login form and HTTP Basic, 20 loops of each."""

    async def mqtt_guess() -> None:
        reader, writer = await _open(target.mqtt_port)
        try:
            writer.write(connect(ATTACKER, "wrong-guess", client_id=f"guess-{time.time()}"))
            await asyncio.wait_for(reader.read(4), 30)
        finally:
            writer.close()

    transport = httpx.AsyncHTTPTransport(local_address=ATTACK_SOURCE)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{target.http_port}",
                                 timeout=30) as web:

        async def basic_guess() -> None:
            await web.get(f"/api/v1/feeds/{ATTACK_FEED}", auth=(ATTACKER, "wrong-guess"))

        async def form_guess() -> None:
            await web.post("/login", data={"email": ATTACKER, "password": "wrong-guess"})

        await asyncio.gather(
            _until(deadline, 20, mqtt_guess), _until(deadline, 20, basic_guess), _until(deadline, 20, form_guess)
        )


async def attack_none(target: Target, deadline: float) -> None:
    """No attack: the well-behaved user alone, the baseline the others compare with on a busy machine."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


ATTACKS: dict[str, Callable[[Target, float], Coroutine[Any, Any, None]]] = {
    "none": attack_none,
    "header": attack_header,
    "idle-http": attack_idle_http,
    "idle-mqtt": attack_idle_mqtt,
    "close-early": attack_close_early,
    "big-publish": attack_big_publish,
    "no-read": attack_no_read,
    "sessions": attack_sessions,
    "flood": attack_flood,
    "logins": attack_logins,
}


def worker(name: str, target: Target, seconds: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker is not the one limited
    asyncio.run(ATTACKS[name](target, time.monotonic() + seconds))


# ---------------------------------------------------------------- the well-behaved user (this process)


@dataclass
class GoodUser:
    """Publishes `GOOD_RATE` points/s at QoS 1 and loads pages, recording latencies."""

    mqtt_port: int
    web: str
    token: str
    http_latency: list[float] = field(default_factory=list)
    http_failures: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        # By message id (no wrap-around below 655 s at 100/s): when it was handed to paho, when its PUBACK
        # came. Plain dict stores, no lock: paho calls on_publish holding a lock publish() takes too.
        self._sent: dict[int, float] = {}
        self._acked: dict[int, float] = {}
        self.client = make_client(Endpoint("127.0.0.1", self.mqtt_port, "good", self.token), "good-user")
        self.client.on_publish = self._on_publish

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked[mid] = time.monotonic()

    @property
    def acknowledged(self) -> int:
        return len(self._acked)

    @property
    def publish_latency(self) -> list[float]:
        return [acked - self._sent[mid] for mid, acked in list(self._acked.items()) if mid in self._sent]

    def _publish(self) -> None:
        index, start = 0, time.monotonic()
        while not self._stop.is_set():
            payload = f'{{"x":{BASE_X + index:.3f},"y":{index % 97}}}'
            sent = time.monotonic()
            info = self.client.publish(f"feeds/{FEED}/good", payload, qos=1)
            self._sent[info.mid] = sent
            index += 1
            self._stop.wait(max(0.0, start + index / GOOD_RATE - time.monotonic()))

    def _load_pages(self) -> None:
        with httpx.Client(base_url=self.web, timeout=HTTP_TIMEOUT) as web:
            while not self._stop.is_set():
                for path, headers in (("/", {}), (f"/api/v1/feeds/{FEED}", {"Authorization": f"Bearer {self.token}"})):
                    began = time.monotonic()
                    try:
                        ok = web.get(path, headers=headers).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    self.http_latency.append(time.monotonic() - began if ok else HTTP_TIMEOUT)
                    self.http_failures += not ok
                self._stop.wait(PAGE_INTERVAL)

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.mqtt_port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, what="the good user's MQTT connection")
        self._threads = [threading.Thread(target=run, daemon=True) for run in (self._publish, self._load_pages)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HTTP_TIMEOUT + 5)
        with contextlib.suppress(AssertionError):  # reported as acknowledged < sent
            wait_for(lambda: len(self._acked) >= len(self._sent), timeout=30, what="the last PUBACKs")
        self.client.disconnect()
        self.client.loop_stop()


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@dataclass
class Result:
    attack: str
    seconds: float
    publish_p99_ms: float | None
    http_p99_ms: float | None
    http_failures: int
    peak_rss_mb: float
    acknowledged: int
    stored: int
    readyz_after_s: float | None


@contextmanager
def serving(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, str, str]]:
    data = work / "data"
    good_token = prepare(data)
    cli(data, "user", "add", ATTACKER, "--password", ATTACKER_PASSWORD)
    cli(data, "feed", "add", ATTACK_FEED, "--owner", ATTACKER)
    attacker_token = cli(data, "token", "add", ATTACKER).splitlines()[-1]
    http_port, mqtt_port = free_port(), free_port()

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    command = [RTDP, "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
               "--mqtt", f"127.0.0.1:{mqtt_port}"]
    with process(command, work / "serve.log", preexec_fn=limit_files) as proc:
        wait_for(lambda: ready(f"http://127.0.0.1:{http_port}/readyz"), timeout=60, what="rtdp serve")
        yield proc, http_port, mqtt_port, good_token, attacker_token


def run_attack(name: str, seconds: float, work: Path) -> Result:
    work.mkdir(parents=True)
    with serving(work) as (proc, http_port, mqtt_port, good_token, attacker_token):
        web = f"http://127.0.0.1:{http_port}"
        server = psutil.Process(proc.pid)
        peak = server.memory_info().rss
        good = GoodUser(mqtt_port, web, good_token)
        good.start()
        target = json.dumps(asdict(Target(http_port, mqtt_port, attacker_token)))
        attacker = subprocess.Popen([sys.executable, __file__, "--worker", name, "--target", target,
                                     "--seconds", str(seconds)], stdout=subprocess.DEVNULL)
        while attacker.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, server.memory_info().rss)
            time.sleep(0.2)
        ended = time.monotonic()
        readyz: float | None = None
        while time.monotonic() - ended < 60:
            if ready(f"{web}/readyz"):
                readyz = time.monotonic() - ended
                break
            time.sleep(0.1)
        good.stop()
        db = work / "data" / "rtdp.sqlite3"
        with contextlib.suppress(AssertionError):
            wait_for(lambda: stored(db, "good") >= good.acknowledged, timeout=30, interval=0.5)
        count = stored(db, "good")
    return Result(
        name, seconds,
        None if (v := p99(good.publish_latency)) is None else round(v * 1000, 1),
        None if (v := p99(good.http_latency)) is None else round(v * 1000, 1),
        good.http_failures, round(peak / 2**20, 1), good.acknowledged, count,
        None if readyz is None else round(readyz, 2),
    )


def table(results: list[Result]) -> str:
    head = ("attack", "MQTT p99 ms", "HTTP p99 ms", "HTTP fail", "peak RSS MB", "acked", "stored", "/readyz s")
    rows = [head] + [
        (r.attack, str(r.publish_p99_ms), str(r.http_p99_ms), str(r.http_failures), str(r.peak_rss_mb),
         str(r.acknowledged), str(r.stored), str(r.readyz_after_s))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each attack runs (default 60)")
    parser.add_argument("--only", default="", help=f"comma-separated attacks: {','.join(ATTACKS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Target(**json.loads(args.target)), args.seconds)
        return 0
    names = [name for name in args.only.split(",") if name] or list(ATTACKS)
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
    work = Path(tempfile.mkdtemp(prefix="rtdp-attack-"))
    results = []
    load_before = os.getloadavg()
    for name in names:
        print(f"{name}: {args.seconds:g} s ...", flush=True)
        results.append(run_attack(name, args.seconds, work / name))
    print(table(results))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"attack-{stamp}.json"
    out.write_text(json.dumps({
        "when": stamp, "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_before": load_before, "load_after": os.getloadavg(), "seconds": args.seconds,
        "targets": {"p99_ms": 100, "rss_mb": 300, "readyz_s": 5},
        "results": [asdict(r) for r in results],
    }, indent=2))
    print(f"written {out}")
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
