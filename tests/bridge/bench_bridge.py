"""Throughput of the bridge through Mosquitto (a script, not a test: timings on a shared machine are noisy).

    .venv/bin/python -m tests.bridge.bench_bridge [--db URL] [--single N] [--batched N] [--profile]

Starts a private Mosquitto and `python -m rtdp bridge` (SQLite in a temp dir unless --db), creates a feed,
feeds `mosquitto_pub -l` (a C publisher) and reports stored points per second, from the first line
published to the last point committed. `--profile` runs the bridge under cProfile and prints the top.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtdp.database import open_database
from rtdp.models import Axis, Point, User
from rtdp.store import create_feed
from tests.support.mosquitto import running_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def _lines(mode: str, count: int, start: int) -> bytes:
    if mode == "single":
        return "".join(f'{{"x":{i},"y":{i % 97}}}\n' for i in range(start, start + count)).encode()
    out = []
    for first in range(start, start + count, 100):
        out.append(json.dumps([{"x": i, "y": i % 97} for i in range(first, first + 100)], separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def run_one(mode: str, points: int, db_url: str | None, profile: bool, workdir: Path) -> float:
    url = db_url or f"sqlite:///{workdir / f'{mode}.sqlite3'}"
    db = open_database(url)
    with db.atomic():
        owner = User.get_or_none(User.email == "bench@example.com") or User.create(
            email="bench@example.com", password_hash="-"
        )
        name = f"bench_{mode}_{int(time.time())}"
        feed = create_feed(name, owner, x_cast="int", y_cast="int")
        axis = Axis.create(feed=feed, name="a")
    with running_mosquitto(workdir / f"mosquitto-{mode}") as broker:
        prof = workdir / f"{mode}.prof"
        python = [sys.executable]
        if profile:
            # py-spy sees every thread (cProfile only the main one, where the bridge just waits).
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            python = [spy, "record", "--format", "raw", "--rate", "200", "-o", str(prof), "--", sys.executable]
        log = (workdir / f"bridge-{mode}.log").open("wb")
        bridge = subprocess.Popen(
            [*python, "-m", "rtdp", "bridge", "--broker", broker.url, "--db", url, "--client-id", f"bench-{mode}",
             "--data-dir", str(workdir / "data"), "--log-level", "warning"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        pub = shutil.which("mosquitto_pub") or "mosquitto_pub"
        base = [pub, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", f"feeds/{name}/a"]
        # Wait until the bridge's session exists (a probe point stored), so nothing is published too early.
        deadline = time.monotonic() + 30
        while Point.select().where(Point.axis == axis.id).count() == 0:
            subprocess.run([*base, "-m", '{"x":-1,"y":0}'], check=True)
            if time.monotonic() > deadline:
                raise SystemExit("bridge did not start: see " + log.name)
            time.sleep(0.2)
        payload = _lines(mode, points, 0)
        cpu_before = _cpu_seconds(bridge.pid) if not profile else float("nan")
        started = time.perf_counter()
        subprocess.run([*base, "-l"], input=payload, check=True)
        published = time.perf_counter() - started
        while True:
            # The axis's point count (kept by the bridge in the same transaction as the points): a
            # COUNT(*) over the growing table every 20 ms took CPU from the bridge on this 2-core machine.
            count = Axis.get_by_id(axis.id).point_count - 1
            if count >= points:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {count} of {points} stored after 600 s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(bridge.pid) - cpu_before if not profile else float("nan")
        if profile:
            # Stop the bridge under py-spy, so py-spy writes its samples when its child exits.
            for pid in subprocess.run(["pgrep", "-P", str(bridge.pid)], capture_output=True).stdout.split():
                subprocess.run(["kill", "-TERM", pid.decode()])
        else:
            bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
        log.close()
        print(f"{mode}: {points} points in {elapsed:.2f}s = {points / elapsed:,.0f} points/s "
              f"(publisher done after {published:.2f}s); bridge CPU {cpu:.2f}s = {points / cpu:,.0f} points per "
              f"CPU-second (from the first point published to the last stored; robust to other load)")
        if profile:
            _summarise(prof)
    db.close()
    return points / elapsed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summarise(collapsed: Path, top: int = 30) -> None:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks, per thread."""
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        count = int(samples)
        total += count
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count
    print(f"{total} samples; top self:")
    for frame, n in sorted(self_count.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame[:150]}")
    print("top inclusive:")
    for frame, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("--single", type=int, default=50_000)
    parser.add_argument("--batched", type=int, default=500_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.single:
            run_one("single", args.single, args.db, args.profile, Path(tmp))
        if args.batched:
            run_one("batch100", args.batched, args.db, args.profile, Path(tmp))


if __name__ == "__main__":
    main()
