"""Benchmark rtdp.store: write_points throughput and downsampled query latency, against raw floors.

    .venv/bin/python bench/store_bench.py [--runs 5] [--rows 200000] [--axis-points 1000000]
        [--only sqlite,query,pg] [--pg-rows 50000]

sqlite: write_points against raw sqlite3. query: query_points over --axis-points points. pg: write_points
on a throwaway PostgreSQL database (created on the server tests use, RTDP_TEST_PG_HOST/PORT/USER, and
dropped afterwards) against raw psycopg2 floors measured in the same rounds, alternated with it.

Prints a table and writes bench/results/store.json. Timings on a shared machine are noisy: medians.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- PostgreSQL

_PG_COLUMNS = "point (axis_id, x, y, received_at)"
_PG_RETURNING = "RETURNING id, axis_id, x + 0.0, y + 0.0"


def pg_batches(axis_id: int, rows: int, batch: int) -> list[list[tuple[int, float, float]]]:
    """The rows write_points gets in bench_write, as (axis_id, x, y)."""
    base = 1.7e9
    return [
        [(axis_id, base + (start + i) * 0.001, float(i % 97)) for i in range(batch)]
        for start in range(0, rows, batch)
    ]


def pg_raw(url: str, rows: int, batch: int, how: str) -> float:
    """A floor: raw psycopg2 storing the same rows into the same table, one transaction per batch,
    with the same conflict handling (skip a row whose (axis, x) exists) and the stored rows returned.

    values: the multi-row INSERT write_points sent before (4 bound parameters a row, interpolated by
    psycopg2). unnest: one text array literal per column, built with str.join. copy: COPY into a
    temporary table, then INSERT ... SELECT from it. plain-copy: COPY straight into the table (no
    conflict handling, nothing returned): what the server's per-row work alone costs.
    """
    import psycopg2

    db, axis_id = setup(url)
    db.close()
    batches = pg_batches(axis_id, rows, batch)
    received = time.time()
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    cur.execute("CREATE TEMPORARY TABLE incoming (axis_id bigint, x float8, y float8, received_at float8)"
                " ON COMMIT DELETE ROWS")
    conn.commit()
    values_sql = ""
    unnest_sql = (
        f"INSERT INTO {_PG_COLUMNS} SELECT * FROM unnest(%s::int8[], %s::float8[], %s::float8[], %s::float8[])"
        f" ON CONFLICT (axis_id, x) DO NOTHING {_PG_RETURNING}"
    )
    copy_sql = (
        f"INSERT INTO {_PG_COLUMNS} SELECT * FROM incoming ON CONFLICT (axis_id, x) DO NOTHING {_PG_RETURNING}"
    )
    if how == "values":
        values_sql = (
            f"INSERT INTO {_PG_COLUMNS} VALUES " + ",".join(["(%s,%s,%s,%s)"] * batch)
            + f" ON CONFLICT (axis_id, x) DO NOTHING {_PG_RETURNING}"
        )

    def store(chunk: list[tuple[int, float, float]]) -> list[Any]:
        if how == "values":
            params: list[object] = []
            for a, x, y in chunk:
                params += (a, x, y, received)
            cur.execute(values_sql, params)
            return cur.fetchall()
        if how == "unnest":
            arrays = [
                "{" + ",".join([repr(r[i]) for r in chunk]) + "}" for i in range(3)
            ] + ["{" + ",".join([repr(received)] * len(chunk)) + "}"]
            cur.execute(unnest_sql, arrays)
            return cur.fetchall()
        text = "".join(f"{a}\t{x!r}\t{y!r}\t{received!r}\n" for a, x, y in chunk)
        if how == "copy":
            cur.copy_expert("COPY incoming FROM STDIN", io.StringIO(text))
            cur.execute(copy_sql)
            return cur.fetchall()
        cur.copy_expert("COPY point (axis_id, x, y, received_at) FROM STDIN", io.StringIO(text))
        return []

    def run() -> None:
        for chunk in batches:
            got = store(chunk)
            conn.commit()
            assert how == "plain-copy" or len(got) == len(chunk), (how, len(got))

    elapsed = timed(run)
    conn.close()
    return len(batches) * batch / elapsed


def bench_pg(args: argparse.Namespace, results: dict[str, object], table: list[tuple[str, str]]) -> None:
    """write_points on PostgreSQL against the raw floors, every measure once per round, alternated."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import available, throwaway_database

    reason = available()
    if reason:
        print(f"pg skipped: {reason}", flush=True)
        return
    n, b = args.pg_rows, args.batch
    measures: list[tuple[str, str, str, Callable[[str], float]]] = [
        ("pg_write_points_rows_per_s", f"PostgreSQL write_points new, batch {b}", "points/s",
         lambda url: bench_write(url, n, b, False)),
        ("pg_raw_values_rows_per_s", f"psycopg2 same multi-row INSERT, batch {b} (floor a)", "rows/s",
         lambda url: pg_raw(url, n, b, "values")),
        ("pg_raw_unnest_rows_per_s", f"psycopg2 INSERT ... unnest(arrays), batch {b} (floor b)", "rows/s",
         lambda url: pg_raw(url, n, b, "unnest")),
        ("pg_raw_copy_rows_per_s", f"psycopg2 COPY temp + INSERT ... SELECT, batch {b}", "rows/s",
         lambda url: pg_raw(url, n, b, "copy")),
        ("pg_raw_plain_copy_rows_per_s", f"psycopg2 COPY into point, no upsert, batch {b}", "rows/s",
         lambda url: pg_raw(url, n, b, "plain-copy")),
        ("pg_write_points_batch_100_rows_per_s", "PostgreSQL write_points new, batch 100", "points/s",
         lambda url: bench_write(url, n // 5, 100, False)),
        ("pg_write_points_replace_rows_per_s", f"PostgreSQL write_points all replaced, batch {b}", "points/s",
         lambda url: bench_write(url, n // 2, b, True)),
    ]
    runs: dict[str, list[float]] = {key: [] for key, *_ in measures}
    with throwaway_database() as url:
        for r in range(args.runs):
            for key, _, _, fn in measures:
                runs[key].append(fn(url))
            print(f"pg round {r}: " + ", ".join(f"{k[3:-11]} {v[-1]:,.0f}" for k, v in runs.items()), flush=True)
    floor = statistics.median(runs["pg_raw_values_rows_per_s"])
    best = max(statistics.median(runs[k]) for k in ("pg_raw_unnest_rows_per_s", "pg_raw_copy_rows_per_s"))
    for key, label, unit, _ in measures:
        med = statistics.median(runs[key])
        # Ratios per round too: the rounds alternate, so each one's ratio shares the load of the moment.
        results[key] = {"median": med, "runs": runs[key]}
        extra = ""
        if key == "pg_write_points_rows_per_s":
            ratios = [w / v for w, v in zip(runs[key], runs["pg_raw_values_rows_per_s"], strict=True)]
            extra = (
                f"  ({med / floor:.2f} x floor a, {med / best:.2f} x best floor;"
                f" per round {min(ratios):.2f}-{max(ratios):.2f} x a)"
            )
            results["pg_write_points_ratio_to_floor_a"] = med / floor
            results["pg_write_points_ratio_to_best_floor"] = med / best
        table.append((label, f"{med:,.0f} {unit}{extra}"))


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--axis-points", type=int, default=1_000_000)
    parser.add_argument("--pg-rows", type=int, default=50_000, help="points per PostgreSQL measure")
    parser.add_argument("--only", default="sqlite,query,pg", help="comma-separated: sqlite, query, pg")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - {"sqlite", "query", "pg"}:
        parser.error(f"--only: unknown section(s) {sorted(only - {'sqlite', 'query', 'pg'})}")
    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "runs": args.runs,
        "rows": args.rows,
        "batch": args.batch,
        "axis_points": args.axis_points,
        "pg_rows": args.pg_rows,
        "only": sorted(only),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def fresh() -> str:
            return f"sqlite:///{tmp}/w{next(counter)}.sqlite3"

        if "sqlite" in only:
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
        if "pg" in only:
            bench_pg(args, results, table)
        if "query" in only:
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
