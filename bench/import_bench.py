"""Benchmark `rtdp import` (rtdp.importer.import_csv) against raw sqlite3 in the same run.

    .venv/bin/python bench/import_bench.py [--lines 1000000] [--rounds 3] [--profile]

Files: `x,y` CSV as `rtdp export` writes it (ISO 8601 UTC times, a datetime feed) and the same with
epoch seconds. Each round imports each file into a fresh SQLite database, alternating with the floor:
raw sqlite3 `executemany` of the same file (csv module, the same x parsing, batches of the same size,
one transaction each, into the same schema and indexes). Prints a table (medians) and writes
bench/results/import.json. Target: >= 100,000 points/s for a 1,000,000-line file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rtdp.database import open_database
from rtdp.importer import BATCH, import_csv
from rtdp.models import Axis, User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed

RESULTS = Path(__file__).parent / "results"
BASE = 1.7e9
TARGET = 100_000


def make_file(path: Path, lines: int, iso: bool) -> None:
    with path.open("w") as out:
        out.write("x,y\n")
        for i in range(lines):
            x = BASE + i * 0.25
            text = datetime.fromtimestamp(x, UTC).isoformat().replace("+00:00", "Z") if iso else repr(x)
            out.write(f"{text},{(i % 1000) * 0.5}\n")


def fresh_db(workdir: Path, name: str) -> tuple[str, Path]:
    path = workdir / f"{name}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}", path


def run_ours(workdir: Path, csv_path: Path, lines: int) -> float:
    url, _ = fresh_db(workdir, "ours")
    db = open_database(url)
    try:
        owner = User.create(email="bench@example.com", password_hash="x")
        feed = create_feed("bench", owner)
        axis = create_axis(feed, "a")
        settings = Settings.build(env={}, data_dir=workdir / "data", db_url=url)
        start = time.perf_counter()
        report = import_csv(feed, csv_path, axis="a", settings=settings, progress=False)
        elapsed = time.perf_counter() - start
        assert report.imported == lines and report.rejected == 0, report
        assert Axis.get_by_id(axis.id).point_count == lines
    finally:
        db.close()
    return lines / elapsed


def run_raw(workdir: Path, csv_path: Path, lines: int, iso: bool) -> float:
    """The floor: the same file parsed with the csv module and stored with sqlite3 executemany."""
    url, path = fresh_db(workdir, "raw")
    db = open_database(url)
    owner = User.create(email="bench@example.com", password_hash="x")
    axis_id = create_axis(create_feed("bench", owner), "a").id
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=normal")
    sql = "INSERT INTO point (axis_id, x, y, received_at) VALUES (?, ?, ?, ?)"
    start = time.perf_counter()
    now = time.time()
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows: list[tuple[int, float, float, float]] = []
        for x_text, y_text in reader:
            x = datetime.fromisoformat(x_text).timestamp() if iso else float(x_text)
            rows.append((axis_id, x, float(y_text), now))
            if len(rows) >= BATCH:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
                rows = []
        if rows:
            conn.execute("BEGIN")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    (count,) = conn.execute("SELECT COUNT(*) FROM point").fetchone()
    conn.close()
    assert count == lines, count
    return lines / elapsed


def profile(workdir: Path, csv_path: Path) -> str:
    """py-spy's top functions for one import (in a subprocess, so py-spy can run it)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    out = workdir / "profile.txt"
    url, _ = fresh_db(workdir, "profiled")
    code = (
        "from rtdp.database import open_database; from rtdp.models import User;"
        "from rtdp.store import create_feed, create_axis; from rtdp.importer import import_csv;"
        "from rtdp.settings import Settings; from pathlib import Path;"
        f"open_database({url!r}); o=User.create(email='b@e.com', password_hash='x'); f=create_feed('bench', o);"
        f"import_csv(f, {str(csv_path)!r}, axis='a', progress=False,"
        f" settings=Settings.build(env={{}}, data_dir=Path({str(workdir / 'pdata')!r})))"
    )
    raw = workdir / "profile.raw"
    subprocess.run(
        [str(py_spy), "record", "-f", "raw", "-o", str(raw), "-r", "200", "--", sys.executable, "-c", code],
        check=True,
        capture_output=True,
    )
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        # Frames are "function (file:line)": drop the line so a function's samples add up.
        frames = [frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
    top = sorted(inclusive.items(), key=lambda kv: -kv[1])[:20]
    mine = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    text = "inclusive:\n" + "\n".join(f"{100 * n / total:5.1f}%  {frame}" for frame, n in top)
    text += "\n\nself:\n" + "\n".join(f"{100 * n / total:5.1f}%  {frame}" for frame, n in mine)
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also run py-spy on one ISO import")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rtdp-import-bench-") as tmp:
        workdir = Path(tmp)
        files = {}
        for kind, iso in (("iso", True), ("epoch", False)):
            files[kind] = workdir / f"{kind}.csv"
            make_file(files[kind], args.lines, iso)
            results[kind] = {"ours": [], "raw": []}
        for round_no in range(args.rounds):
            for kind, path in files.items():
                # Alternate which goes first: the machine is shared and its load drifts.
                order = ("ours", "raw") if round_no % 2 == 0 else ("raw", "ours")
                for which in order:
                    rate = (
                        run_ours(workdir, path, args.lines)
                        if which == "ours"
                        else run_raw(workdir, path, args.lines, kind == "iso")
                    )
                    results[kind][which].append(rate)
                    print(f"round {round_no + 1} {kind:5} {which:4} {rate:>10,.0f} points/s", flush=True)
        profile_text = profile(workdir, files["iso"]) if args.profile else None
    load_after = os.getloadavg()[0]
    print()
    print(f"| file ({args.lines:,} lines) | rtdp import (median) | raw sqlite3 executemany (median) | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    summary = {}
    for kind, label in (("iso", "x,y ISO 8601 times (export format)"), ("epoch", "x,y epoch seconds")):
        ours = statistics.median(results[kind]["ours"])
        raw = statistics.median(results[kind]["raw"])
        met = "met" if ours >= TARGET else "**not met**"
        print(f"| {label} | {ours:,.0f} points/s | {raw:,.0f} rows/s | {ours / raw:.2f} | >= 100,000/s: {met} |")
        summary[kind] = {"ours_median": ours, "raw_median": raw, "ratio": ours / raw}
    print(f"\nload average {load_before:.1f} before, {load_after:.1f} after")
    if profile_text:
        print("\npy-spy, one ISO import (inclusive share of samples):\n" + profile_text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import.json").write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "lines": args.lines,
                "rounds": args.rounds,
                "batch": BATCH,
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "load": [load_before, load_after],
                "runs": results,
                "summary": summary,
                "profile": profile_text,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
