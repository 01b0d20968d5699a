"""Scale-out benchmark: two bridges on one share group against one, on PostgreSQL, one point per message
(points/s and CPU seconds per 10,000 points for each layout), and history on PostgreSQL (max_points=2000
over 1,000,000 points). Figures go to bench/README.md.

    .venv/bin/python bench/scaleout.py [--quick] [--only bridges,history]

Needs Mosquitto and a PostgreSQL server (tests/support/postgres.py: a throwaway database, dropped after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import pipeline  # noqa: E402
import store_bench  # noqa: E402

from tests.support.mosquitto import running_mosquitto  # noqa: E402
from tests.support.postgres import available, throwaway_database  # noqa: E402


def bench_bridges(work: Path, args: argparse.Namespace) -> None:
    """One bridge, then two on one share group, interleaved round by round on fresh axes of one database."""
    results: dict[int, list[pipeline.Stored]] = {1: [], 2: []}
    with throwaway_database() as url:
        data = work / "data"
        pipeline.prepare(data, url)
        with running_mosquitto(work / "mosquitto") as mosq:
            broker = pipeline.Broker(mosq.host, mosq.port)
            for r in range(args.rounds):
                for count in (1, 2):
                    with ExitStack() as stack:
                        pids = []
                        for n in range(count):
                            command = [pipeline.RTDP, "bridge", "--broker", mosq.url, "--db", url, "--data-dir",
                                       str(data), "--client-id", f"bench-{count}-{n}", "--share-group", f"g{count}",
                                       "--log-level", "info"]
                            log = work / f"bridge-{count}-{n}-{r}.log"
                            proc = stack.enter_context(pipeline.process(command, log))
                            pids.append(proc.pid)
                            pipeline.wait_for(lambda: "connected to MQTT" in log.read_text(), 60,  # noqa: B023
                                              what=f"bridge {n} connected")
                        # Every session subscribed: a probe of this round on each of a few axes is stored.
                        for k in range(4):
                            probe = f"probe{count}{r}{k}"
                            pipeline.wait_for(lambda: _probe(broker, url, probe), 60, interval=0.3,  # noqa: B023
                                              what="a probe stored")
                        got = pipeline.stored_rate(broker, url, work, f"b{count}r{r}", args.points, args.publishers,
                                                   pids=pids)
                        results[count].append(got)
                        print(f"  round {r}: {count} bridge(s): {got.rate:,.0f} points/s, "
                              f"{got.cpu_per_10k:.2f} CPU s per 10k points", flush=True)
                    # Stopped, their persistent sessions would keep getting a copy of everything published while
                    # the other layout runs: retire them (rtdp bridge --retire).
                    for n in range(count):
                        pipeline.subprocess.run(
                            [pipeline.RTDP, "bridge", "--broker", mosq.url, "--db", url, "--data-dir", str(data),
                             "--client-id", f"bench-{count}-{n}", "--share-group", f"g{count}", "--retire",
                             "--log-level", "warning"], check=True, cwd=pipeline.ROOT)
    one = statistics.median(s.rate for s in results[1])
    two = statistics.median(s.rate for s in results[2])
    cpu1 = statistics.median(s.cpu_per_10k for s in results[1])
    cpu2 = statistics.median(s.cpu_per_10k for s in results[2])
    print(f"bridges on PostgreSQL, one point per message: one {one:,.0f} points/s ({cpu1:.2f} CPU s/10k), "
          f"two {two:,.0f} points/s ({cpu2:.2f} CPU s/10k): {two / one:.2f}x", flush=True)


def _probe(broker: pipeline.Broker, url: str, axis: str) -> bool:
    pipeline.publish_one(broker, f"feeds/{pipeline.FEED}/{axis}", f'{{"x":{time.time():.6f},"y":0}}')
    return pipeline.stored(url, axis) > 0


def bench_history(work: Path, args: argparse.Namespace) -> None:
    from rtdp.store import query_points

    with throwaway_database() as url:
        db, axis = store_bench.fill_axis(url, args.history_points)
        timings = [1000 * store_bench.timed(lambda: query_points(axis, max_points=2000)) for _ in range(7)]
        got = query_points(axis, max_points=2000)
        assert any(y == 1000.0 for _, _, y in got), "the spike must survive downsampling"
        db.close()
    print(f"history on PostgreSQL, max_points=2000 over {args.history_points:,} points: median "
          f"{statistics.median(timings):.1f} ms (min {min(timings):.1f}, max {max(timings):.1f})", flush=True)


SECTIONS = {"bridges": bench_bridges, "history": bench_history}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 3 minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--publishers", type=int, default=4)
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.points = 40_000 if args.quick else 100_000
    args.history_points = 1_000_000
    reason = available()
    if reason:
        print(f"skipped: {reason}")
        return 1
    with tempfile.TemporaryDirectory(prefix="rtdp-scaleout-") as tmp:
        for name in args.only.split(","):
            print(f"{name}:", flush=True)
            SECTIONS[name](Path(tmp) / name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
