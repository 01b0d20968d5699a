"""`rtdp viewer --workers N` when its workers cannot start: it gives up with one line instead of restarting
them forever. (Workers serving and restarting under load: tests/faults/test_workers.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.env import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_workers_that_cannot_start_end_the_viewer(tmp_path: Path) -> None:
    # Nothing listens on the database's port: every worker's startup fails.
    unreachable = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "rtdp", "viewer", "--workers", "2", "--http", "127.0.0.1:0",
         "--db", f"postgresql://nobody@127.0.0.1:{unreachable}/x", "--mqtt", f"127.0.0.1:{unreachable}",
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "error: viewer workers exited 5 times in a row within 10 s of starting" in done.stderr
    assert "viewer worker failed" not in done.stderr  # uvicorn said why; no traceback of ours
