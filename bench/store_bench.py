"""Benchmark rtdp.store: write_points throughput and downsampled query latency, against raw sqlite3.

    .venv/bin/python bench/store_bench.py [--runs 5] [--rows 200000] [--axis-points 1000000] [--pg URL]

Prints a table and writes bench/results/store.json. Timings on a shared machine are noisy: medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import peewee as pw

from rtdp.codec import Sample
from rtdp.database import open_database
from rtdp.models import Axis, User
from rtdp.store import create_axis, create_feed, query_points, write_points

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def setup(url: str) -> tuple[pw.Database, int]:
    db = open_database(url)
    user = User.create(email=f"bench{time.time_ns()}@example.com", password_hash="x")
    feed = create_feed(f"bench{time.time_ns()}", user)
    return db, create_axis(feed, "a").id


def bench_write(url: str, rows: int, batch: int, replace: bool) -> float:
    """Points/s through write_points, `batch` points per call (the bridge's batch: e.g. 20 messages
    of 100 points). With `replace`, every point overwrites an existing one (a redelivery)."""
    db, axis_id = setup(url)
    base = 1.7e9
    batches = [
        [(axis_id, Sample(base + (start + i) * 0.001, float(i % 97))) for i in range(batch)]
        for start in range(0, rows, batch)
    ]
    if replace:
        for chunk in batches:
            write_points(chunk)
    elapsed = timed(lambda: [write_points(chunk) for chunk in batches])
    expected = len(batches) * batch
    count = Axis.get_by_id(axis_id).point_count
    assert count == expected, (count, expected)
    db.close()
    return expected / elapsed


def bench_raw_sqlite(path: str, rows: int, batch: int) -> float:
    """The floor: sqlite3 executemany of the same rows into the same schema, one transaction per batch."""
    db, axis_id = setup(f"sqlite:///{path}")
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=normal")
    base = 1.7e9
    batches = [
        [(axis_id, base + (start + i) * 0.001, float(i % 97), 0.0) for i in range(batch)]
        for start in range(0, rows, batch)
    ]

    def run() -> None:
        for chunk in batches:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO point (axis_id, x, y, received_at) VALUES (?, ?, ?, ?)", chunk)
            conn.execute("COMMIT")

    elapsed = timed(run)
    conn.close()
    return len(batches) * batch / elapsed


def fill_axis(url: str, points: int) -> tuple[pw.Database, Axis]:
    db, axis_id = setup(url)
    base = 1.7e9
    chunk = 5000
    for start in range(0, points, chunk):
        write_points(
            [
                (axis_id, Sample(base + i, 1000.0 if i == points // 3 else float(i % 100)))
                for i in range(start, min(points, start + chunk))
            ]
        )
    return db, Axis.get_by_id(axis_id)


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--axis-points", type=int, default=1_000_000)
    parser.add_argument("--pg", help="also run against this PostgreSQL URL (a throwaway database)")
    parser.add_argument("--skip-query", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "runs": args.runs,
        "rows": args.rows,
        "batch": args.batch,
        "axis_points": args.axis_points,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def fresh() -> str:
            return f"sqlite:///{tmp}/w{next(counter)}.sqlite3"

        med, values = median_of(args.runs, lambda: bench_raw_sqlite(f"{tmp}/raw{next(counter)}.sqlite3",
                                                                     args.rows, args.batch))
        results["raw_executemany_rows_per_s"] = {"median": med, "runs": values}
        table.append(("sqlite3 executemany (floor)", f"{med:,.0f} rows/s"))
        med, values = median_of(args.runs, lambda: bench_write(fresh(), args.rows, args.batch, False))
        results["write_points_rows_per_s"] = {"median": med, "runs": values}
        table.append((f"write_points new, batch {args.batch}", f"{med:,.0f} points/s"))
        med, values = median_of(args.runs, lambda: bench_write(fresh(), args.rows // 4, 100, False))
        results["write_points_batch_100_rows_per_s"] = {"median": med, "runs": values}
        table.append(("write_points new, batch 100 (one message)", f"{med:,.0f} points/s"))
        med, values = median_of(args.runs, lambda: bench_write(fresh(), args.rows // 4, args.batch, True))
        results["write_points_replace_rows_per_s"] = {"median": med, "runs": values}
        table.append((f"write_points all replaced, batch {args.batch}", f"{med:,.0f} points/s"))
        if args.pg:
            med, values = median_of(args.runs, lambda: bench_write(args.pg, args.rows // 4, args.batch, False))
            results["pg_write_points_rows_per_s"] = {"median": med, "runs": values}
            table.append((f"PostgreSQL write_points new, batch {args.batch}", f"{med:,.0f} points/s"))
        if not args.skip_query:
            db, axis = fill_axis(fresh(), args.axis_points)
            for max_points in (2000, 200):
                ms, values = median_of(
                    args.runs, lambda mp=max_points: 1000 * timed(lambda: query_points(axis, max_points=mp))  # type: ignore[misc]
                )
                got = query_points(axis, max_points=max_points)
                assert any(y == 1000.0 for _, _, y in got), "the spike must survive downsampling"
                results[f"query_max_points_{max_points}_ms"] = {"median": ms, "runs": values, "points": len(got)}
                table.append((f"query_points {args.axis_points:,} pts, max_points={max_points}", f"{ms:,.1f} ms"))
            # The floor: one aggregate pass over the axis's index in SQLite, no Python per row.
            scan = "SELECT MIN(y), MAX(y) FROM point WHERE axis_id = ?"
            ms, values = median_of(args.runs, lambda: 1000 * timed(lambda: db.execute_sql(scan, (axis.id,)).fetchall()))
            results["raw_scan_min_max_ms"] = {"median": ms, "runs": values}
            table.append((f"raw SELECT MIN(y), MAX(y) over {args.axis_points:,} pts (floor)", f"{ms:,.1f} ms"))
            ms, values = median_of(args.runs, lambda: 1000 * timed(lambda: query_points(axis, limit=2000, newest=True)))
            results["query_newest_2000_ms"] = {"median": ms, "runs": values}
            table.append(("query_points newest 2000", f"{ms:,.1f} ms"))
            db.close()
    width = max(len(name) for name, _ in table)
    for name, value in table:
        print(f"{name:<{width}}  {value:>18}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS / 'store.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
