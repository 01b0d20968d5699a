"""Benchmark the retention purge on SQLite: how fast it deletes, and what it costs a writer meanwhile.

    .venv/bin/python bench/retention_bench.py [--points 500000] [--rounds 3]

Each round fills one axis with `--points` points, then runs a bridge-like writer (write_points of 2,000
new points every 50 ms, as the bridge's default batch) for the same time twice: alone, and while
rtdp.retention.purge deletes all but the newest 1,000 points (default batch 5,000, adaptive). Prints
the purge's rate, its longest delete transaction and the writer's commit latency (p50/p99/max) both
ways; writes bench/results/retention.json. Medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rtdp.codec import Sample
from rtdp.database import open_database
from rtdp.models import Axis, Feed, User
from rtdp.retention import purge
from rtdp.store import create_axis, create_feed, write_points

RESULTS = Path(__file__).parent / "results"
WRITER_BATCH = 2000
WRITER_PERIOD = 0.05


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Writer(threading.Thread):
    """Writes WRITER_BATCH new points every WRITER_PERIOD seconds and records each commit's latency."""

    def __init__(self, axis_id: int, start_x: float) -> None:
        super().__init__(daemon=True)
        self.axis_id = axis_id
        self.x = start_x
        self.latencies: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        db = Axis._meta.database
        while not self.done.is_set():
            batch = [(self.axis_id, Sample(self.x + i, 1.0)) for i in range(WRITER_BATCH)]
            self.x += WRITER_BATCH
            began = time.perf_counter()
            write_points(batch)
            self.latencies.append(time.perf_counter() - began)
            self.done.wait(WRITER_PERIOD)
        db.close()


def one_round(workdir: Path, points: int) -> dict[str, float]:
    path = workdir / f"r{time.time_ns()}.sqlite3"
    db = open_database(f"sqlite:///{path}")
    owner = User.create(email="bench@example.com", password_hash="x")
    feed = create_feed("bench", owner, x_cast="float")
    axis = create_axis(feed, "a")
    for start in range(0, points, 10_000):
        write_points([(axis.id, Sample(float(i), 0.0)) for i in range(start, min(points, start + 10_000))])

    # Purge while the writer runs, then the writer alone for as long.
    Feed.update(retention_points=1000).where(Feed.id == feed.id).execute()
    writer = Writer(axis.id, float(points))
    writer.start()
    report = purge(time.time())
    writer.done.set()
    writer.join()
    during = writer.latencies
    alone_writer = Writer(axis.id, writer.x)
    alone_writer.start()
    time.sleep(max(report.seconds, 1.0))
    alone_writer.done.set()
    alone_writer.join()
    alone = alone_writer.latencies
    db.close()
    return {
        "removed": report.removed,
        "purge_seconds": report.seconds,
        "purge_rate": report.removed / report.seconds,
        "batches": report.batches,
        "longest_ms": report.longest * 1000,
        "writer_p50_ms_during": percentile(during, 0.5) * 1000,
        "writer_p99_ms_during": percentile(during, 0.99) * 1000,
        "writer_max_ms_during": max(during) * 1000,
        "writer_p50_ms_alone": percentile(alone, 0.5) * 1000,
        "writer_p99_ms_alone": percentile(alone, 0.99) * 1000,
        "writer_max_ms_alone": max(alone) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="rtdp-retention-bench-") as tmp:
        for number in range(args.rounds):
            result = one_round(Path(tmp), args.points)
            rounds.append(result)
            print(f"round {number + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()), flush=True)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print()
    print("| measure (medians) | value |")
    print("| --- | --- |")
    print(f"| purge of {medians['removed']:,.0f} points | {medians['purge_seconds']:.2f} s "
          f"({medians['purge_rate']:,.0f} points/s, {medians['batches']:.0f} transactions) |")
    print(f"| longest delete transaction | {medians['longest_ms']:.1f} ms |")
    for what in ("p50", "p99", "max"):
        print(f"| writer commit {what}, alone / during the purge | {medians[f'writer_{what}_ms_alone']:.1f} ms / "
              f"{medians[f'writer_{what}_ms_during']:.1f} ms |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retention.json").write_text(
        json.dumps({"when": datetime.now(UTC).isoformat(), "points": args.points, "rounds": rounds,
                    "medians": medians}, indent=2)
    )


if __name__ == "__main__":
    main()
