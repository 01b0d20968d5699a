"""`rtdp serve`'s original URL against InfluxDB 1.x's single-point `/write`, with wrk in the same run (issue 16).

    .venv/bin/python bench/http_serve.py [--seconds 8] [--connections 50] [--rounds 3]

- ours: `rtdp serve` in a fresh data dir, `GET /service/feed_input.json/bench/<axis>?y=1` with a Bearer token,
  one point per request (`wrk -t2 -c50 -d8s`); after each round every 200 must be a stored point (the
  axis's count in SQLite, waited for).
- peer: Debian's InfluxDB 1.x (`apt-get install influxdb`), started here in a temporary directory on free
  ports with a generated config (no auth, no HTTP log, no _internal monitor), `POST /write?db=bench` with
  one point of line protocol; rounds interleaved with ours. Skipped, with the reason, where it is not
  installed.
- read-after-write: 200 sequential requests, each followed at once by a read of that point through the
  points API: how many reads miss a point just answered 200.

Also called by bench/pipeline.py (section `serve_http`). Not a test: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import http_ingest  # noqa: E402
import pipeline  # noqa: E402

from tests.support.env import free_port, wait_for, wait_port  # noqa: E402

INFLUXD = shutil.which("influxd")
LINE = "m,feed=bench a=1"
PROBES = 200


@dataclass
class Results:
    ours: list[float] = field(default_factory=list)
    ours_p99: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)
    peer_p99: list[float] = field(default_factory=list)
    peer_skipped: str = ""
    oks: int = 0
    unstored: int = 0
    read_misses: int = 0


def influx_missing() -> str:
    """Why the InfluxDB row cannot run here, or "" when it can."""
    if INFLUXD is None:
        return "influxd not installed (apt-get install influxdb: Debian ships 1.6)"
    return ""


@contextmanager
def running_influxd(work: Path) -> Iterator[str]:
    """InfluxDB 1.x on free loopback ports with its data in `work`; yields its HTTP URL (database `bench` made)."""
    assert INFLUXD is not None
    work.mkdir(parents=True, exist_ok=True)
    http_port, rpc_port = free_port(), free_port()
    config = work / "influxdb.conf"
    config.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{work / 'meta'}"
  logging-enabled = false
[data]
  dir = "{work / 'data'}"
  wal-dir = "{work / 'wal'}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
""")
    url = f"http://127.0.0.1:{http_port}"
    with pipeline.process([INFLUXD, "-config", str(config)], work / "influxd.log"):
        wait_port("127.0.0.1", http_port, 60)
        wait_for(lambda: _status(f"{url}/ping") == 204, 60, interval=0.1, what="influxd")
        httpx.post(f"{url}/query", params={"q": "CREATE DATABASE bench"}).raise_for_status()
        yield url


@contextmanager
def running_serve(work: Path) -> Iterator[tuple[str, str, Path]]:
    """`rtdp serve` on free ports in a fresh data dir with user, feed and token: (web URL, token, SQLite file)."""
    data = work / "serve"
    token = pipeline.prepare(data)
    http_port, mqtt_port = free_port(), free_port()
    command = [pipeline.RTDP, "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
               "--mqtt", f"127.0.0.1:{mqtt_port}", "--log-level", "warning"]
    url = f"http://127.0.0.1:{http_port}"
    with pipeline.process(command, work / "serve.log"):
        wait_for(lambda: pipeline.ready(f"{url}/readyz"), 60, interval=0.1, what="rtdp serve")
        yield url, token, data / "rtdp.sqlite3"


def lua_post(work: Path) -> Path:
    """A wrk script sending InfluxDB's single-point write."""
    script = work / "influx-write.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{LINE}"\nwrk.headers["Content-Type"] = "text/plain"\n')
    return script


def read_after_write(url: str, token: str, axis: str) -> int:
    """Sequential writes, each read back at once through the points API: how many reads miss their point."""
    headers = {"Authorization": f"Bearer {token}"}
    misses = 0
    with httpx.Client(headers=headers, timeout=10) as client:
        for index in range(PROBES):
            x = f"{pipeline.BASE_X + index:.3f}"
            written = client.get(f"{url}/service/feed_input.json/{pipeline.FEED}/{axis}", params={"x": x, "y": 1})
            written.raise_for_status()
            read = client.get(f"{url}/api/v1/feeds/{pipeline.FEED}/axes/{axis}/points", params={"since": x, "until": x})
            read.raise_for_status()
            misses += not read.json()["points"]
    return misses


def run(work: Path, rounds: int, seconds: int, connections: int) -> Results:
    results = Results(peer_skipped=influx_missing())
    with contextlib.ExitStack() as stack:
        url, token, db = stack.enter_context(running_serve(work))
        influx = stack.enter_context(running_influxd(work / "influx")) if not results.peer_skipped else ""
        script = lua_post(work)
        for r in range(rounds):  # interleaved: load from other jobs hits both alike
            axis = f"h{r}"
            pipeline.cli(db.parent, "axis", "add", pipeline.FEED, axis)
            ours = http_ingest.run_wrk(f"{url}/service/feed_input.json/{pipeline.FEED}/{axis}?y=1", seconds,
                                       connections, token)
            ok = ours.total - ours.bad
            try:
                wait_for(lambda: pipeline.stored(db, axis) >= ok, 30, interval=0.5, what="every 200 stored")  # noqa: B023
            except AssertionError:
                pass
            results.oks += ok
            results.unstored += max(0, ok - pipeline.stored(db, axis))
            results.ours.append(ours.rate)
            results.ours_p99.append(ours.p99_ms)
            if influx:
                peer = http_ingest.run_wrk(f"{influx}/write?db=bench", seconds, connections, script=script)
                results.peer.append(peer.rate)
                results.peer_p99.append(peer.p99_ms)
        pipeline.cli(db.parent, "axis", "add", pipeline.FEED, "raw")
        results.read_misses = read_after_write(url, token, "raw")
    return results


def section(work: Path, args: argparse.Namespace, rows: dict[str, pipeline.Row]) -> None:
    """bench/pipeline.py's `serve_http` rows (issue 16's targets)."""
    results = run(work, args.rounds, args.http_seconds, args.connections)
    row = rows["serve_http"] = pipeline.Row(
        "rtdp serve, feed_input.json, 1 point/request", "req/s", ours=results.ours, baseline=results.peer,
        baseline_name="InfluxDB 1.x /write, 1 point", target="ratio >= 0.5", check=lambda r: r.ratio >= 0.5,
        note=f"p99 {statistics.median(results.ours_p99):.1f} ms"
        + (f", InfluxDB p99 {statistics.median(results.peer_p99):.1f} ms" if results.peer_p99 else ""),
    )
    if results.peer_skipped:
        row.note += f"; InfluxDB skipped: {results.peer_skipped}"
        row.check = None
    rows["serve_http_unstored"] = pipeline.Row(
        "rtdp serve, HTTP 200s for points not stored", "count", ours=[float(results.unstored)], target="0",
        check=lambda r: r.median == 0, note=f"of {results.oks} 200s",
    )
    rows["serve_http_read"] = pipeline.Row(
        "rtdp serve, reads right after a 200 missing the point", f"of {PROBES}", ours=[float(results.read_misses)],
        target="0", check=lambda r: r.median == 0,
    )
    print(summary(results), flush=True)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtdp-http-serve-"))
    try:
        results = run(work, args.rounds, args.seconds, args.connections)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(results))


def summary(results: Results) -> str:
    lines = [f"rtdp serve, original URL: {', '.join(f'{r:,.0f}' for r in results.ours)} req/s, "
             f"p99 {', '.join(f'{p:.1f}' for p in results.ours_p99)} ms"]
    if results.peer_skipped:
        lines.append(f"InfluxDB /write: skipped ({results.peer_skipped})")
    else:
        lines.append(f"InfluxDB /write: {', '.join(f'{r:,.0f}' for r in results.peer)} req/s, "
                     f"p99 {', '.join(f'{p:.1f}' for p in results.peer_p99)} ms")
    lines.append(f"200s not stored: {results.unstored} of {results.oks}; "
                 f"reads right after a 200 that missed the point: {results.read_misses} of {PROBES}")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f} s")
