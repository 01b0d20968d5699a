"""`rtdp serve`'s CPU per HTTP point, two checkouts side by side (issue 16: before/after in one sitting).

    .venv/bin/python bench/http_cpu.py /work/wt-old /work/wt-new [--seconds 5] [--rounds 5]

Each checkout's own `.venv/bin/rtdp serve` runs in a fresh data dir (user, feed, token made with the CLI);
the rounds alternate between them: wrk (`-t2 -c50`) on `/service/feed_input.json/bench/<axis>?y=1` with a
Bearer token, one point per request, after one request that fills the caches. Per round: requests/s, p99,
and the server's CPU seconds per request from /proc, for its main thread (the event loop: HTTP, broker)
and its other threads together (the writer, mostly), and every 200 checked against SQLite. On a shared
machine requests/s swing with the load; CPU per request is the steadier figure. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import http_ingest  # noqa: E402
import pipeline  # noqa: E402

from tests.support.env import free_port, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Serve:
    name: str
    pid: int
    url: str
    token: str
    data: Path
    rounds: list[tuple[float, float, float, float]] = field(default_factory=list)  # req/s, p99, main, other

    def cpu(self) -> tuple[float, float]:
        """CPU seconds (user + system) of the main thread and of all the others."""
        main = other = 0.0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{self.pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / TICK
                if int(task) == self.pid:
                    main += seconds
                else:
                    other += seconds
        return main, other


@contextlib.contextmanager
def serving(checkout: Path, work: Path) -> Iterator[Serve]:
    data = work / "serve"
    token = pipeline.prepare(data)
    http_port, mqtt_port = free_port(), free_port()
    command = [str(checkout / ".venv/bin/rtdp"), "serve", "--data-dir", str(data), "--http",
               f"127.0.0.1:{http_port}", "--mqtt", f"127.0.0.1:{mqtt_port}", "--log-level", "warning"]
    url = f"http://127.0.0.1:{http_port}"
    with pipeline.process(command, work / "serve.log") as process:
        wait_for(lambda: pipeline.ready(f"{url}/readyz"), 60, interval=0.1, what=f"rtdp serve of {checkout}")
        yield Serve(checkout.name, process.pid, url, token, data)


def one_round(serve: Serve, axis: str, seconds: int) -> None:
    pipeline.cli(serve.data, "axis", "add", pipeline.FEED, axis)
    url = f"{serve.url}/service/feed_input.json/{pipeline.FEED}/{axis}?y=1"
    subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {serve.token}", url], check=True)
    before = serve.cpu()
    load = os.getloadavg()[0]
    result = http_ingest.run_wrk(url, seconds, 50, serve.token)
    after = serve.cpu()
    ok = result.total - result.bad + 1  # and the request that filled the caches
    db = serve.data / "rtdp.sqlite3"
    wait_for(lambda: pipeline.stored(db, axis) >= ok, 30, interval=0.5, what="every 200 stored")
    main, other = ((a - b) * 1e6 / result.total for a, b in zip(after, before, strict=True))
    serve.rounds.append((result.rate, result.p99_ms, main, other))
    print(f"{serve.name:>16} {axis}: {result.rate:8,.0f} req/s  p99 {result.p99_ms:6.1f} ms  non-2xx {result.bad}  "
          f"stored {pipeline.stored(db, axis)} of {ok} 200s  CPU/request main {main:5.1f} + others {other:5.1f} "
          f"= {main + other:5.1f} us  (load {load:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="worktrees, each with its .venv (scripts/setup)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtdp-http-cpu-") as tmp, contextlib.ExitStack() as stack:
        serves = [stack.enter_context(serving(c.resolve(), Path(tmp) / str(i))) for i, c in enumerate(args.checkouts)]
        for r in range(args.rounds):  # interleaved: load from other jobs hits each alike
            for serve in serves:
                one_round(serve, f"c{r}", args.seconds)
    print(f"medians of {args.rounds} rounds:")
    for serve in serves:
        rate, p99, main, other = (statistics.median(column) for column in zip(*serve.rounds, strict=True))
        print(f"{serve.name:>16}: {rate:8,.0f} req/s  p99 {p99:6.1f} ms  CPU/request main {main:5.1f} + others "
              f"{other:5.1f} = {statistics.median(m + o for _, _, m, o in serve.rounds):5.1f} us")


if __name__ == "__main__":
    main()
