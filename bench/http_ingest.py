"""Measure HTTP ingestion (the original URL, one point per request, token auth, QoS 1 acknowledged by a
real Mosquitto) against a bare Starlette endpoint with two query parameters, in the same run; then
check that no 200 was answered for a point the broker did not acknowledge.

    .venv/bin/python bench/http_ingest.py [--seconds 10] [--connections 50]

Needs `wrk` and `mosquitto`. Not a test: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtdp.accounts import create_token, create_user  # noqa: E402
from rtdp.database import open_database  # noqa: E402
from rtdp.settings import BrokerURL, Settings  # noqa: E402
from rtdp.store import create_axis, create_feed  # noqa: E402
from tests.support.env import free_port, wait_for  # noqa: E402
from tests.support.mosquitto import running_mosquitto  # noqa: E402

# The same uvicorn options for both servers, so the ratio compares the apps, not the servers.
UVICORN = (
    'OPTIONS = dict(http="httptools", loop="uvloop", log_level="warning", access_log=False, server_header=False)\n'
)

BARE = UVICORN + """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
import uvicorn, sys

async def bare(request):
    return JSONResponse({"x": request.query_params.get("x"), "y": request.query_params.get("y")})

uvicorn.run(Starlette(routes=[Route("/bare", bare)]), host="127.0.0.1", port=int(sys.argv[1]), **OPTIONS)
"""

VIEWER = UVICORN + """
import sys
from pathlib import Path
from rtdp.settings import BrokerURL, HostPort, Settings
from viewer.app import build_server, create_app
settings = Settings(data_dir=Path(sys.argv[1]), broker=BrokerURL.parse(sys.argv[2]),
                    http=HostPort("127.0.0.1", int(sys.argv[3])), log_level="warning")
app = create_app(settings)
build_server(settings, app, **OPTIONS).run()
"""


@dataclass(frozen=True)
class Wrk:
    """What one wrk run measured."""

    rate: float
    total: int
    bad: int  # non-2xx/3xx answers
    p99_ms: float


def run_wrk(url: str, seconds: int, connections: int, token: str | None = None, script: Path | None = None) -> Wrk:
    """wrk on `url` (GET, or what the Lua `script` sets), with a Bearer `token` if given."""
    # --timeout above the viewer's 5 s PUBACK wait, so a frozen broker shows as 503s, not socket timeouts.
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)] if p99 else float("nan")
    print(f"  {url.split('?')[0]}: {rate:,.0f} req/s, {total} requests, non-2xx {bad.group(1) if bad else 0}, "
          f"p99 {p99_ms:.2f} ms", flush=True)
    return Wrk(rate, total, int(bad.group(1)) if bad else 0, p99_ms)


def wrk(url: str, seconds: int, connections: int, token: str | None = None) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx) from wrk."""
    result = run_wrk(url, seconds, connections, token)
    return result.rate, result.total, result.bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtdp-bench-"))
    with running_mosquitto(work / "mosquitto") as broker:
        data = work / "data"
        settings = Settings(data_dir=data, broker=BrokerURL.parse(broker.url))
        db = open_database(settings.database_url)
        user = create_user("bench@nothing.com", "bench-password")
        create_axis(create_feed("bench", user), "a")
        token = create_token(user).token
        db.close()

        # The witness is mosquitto_sub (C): a paho subscriber in this process took CPU from the viewer
        # during the ingestion run only, on a 2-core machine.
        seen = work / "seen.txt"
        watcher = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", "feeds/#", "-F", "%t"],
            stdout=seen.open("wb"), stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _probe(broker.host, broker.port, seen), 20, what="mosquitto_sub to subscribe")

        def received() -> int:
            return sum(1 for line in seen.read_text().splitlines() if line == "feeds/bench/a")

        bare_port, viewer_port = free_port(), free_port()
        servers = [
            subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], cwd=ROOT),
            subprocess.Popen([sys.executable, "-c", VIEWER, str(data), broker.url, str(viewer_port)], cwd=ROOT),
        ]
        try:
            bare_url = f"http://127.0.0.1:{bare_port}/bare?x=1&y=2"
            ingest_url = f"http://127.0.0.1:{viewer_port}/service/feed_input.json/bench/a?y=1"
            wait_for(lambda: _ok(bare_url), 20, what="bare server")
            wait_for(lambda: _ok(f"http://127.0.0.1:{viewer_port}/readyz"), 20, what="viewer")
            print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, one uvicorn worker each, Mosquitto QoS 1:")
            bare_rate, _, _ = wrk(bare_url, args.seconds, args.connections)
            rate, total, bad = wrk(ingest_url, args.seconds, args.connections, token)
            ok = total - bad
            # >= : the readiness probe of wait_for(readyz) published nothing, so every line is a point.
            wait_for(lambda: received() >= ok, 10, what="the watcher to see every acknowledged point")
            print(f"  ingestion / bare = {rate / bare_rate:.2f}; 200s {ok}, points seen by a subscriber {received()}")

            print("broker frozen (SIGSTOP): every answer must be 503")
            broker.process.send_signal(signal.SIGSTOP)
            try:
                _, total, bad = wrk(ingest_url, 12, args.connections, token)
            finally:
                broker.process.send_signal(signal.SIGCONT)
            print(f"  200s while frozen: {total - bad} (of {total})")
        finally:
            for server in [*servers, watcher]:
                server.terminate()
                server.wait(10)


def _probe(host: str, port: int, seen: Path) -> bool:
    """Publish a probe; True once mosquitto_sub printed one (it is subscribed)."""
    publish.single("feeds/probe/probe", "1", hostname=host, port=port, protocol=mqtt.MQTTv311)
    return seen.exists() and "feeds/probe/probe" in seen.read_text()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
