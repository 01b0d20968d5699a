from __future__ import annotations

import resource
import subprocess
import sys

from rtdp.openfiles import SPARE

CHILD = """
import resource, sys
from rtdp.openfiles import allow_open_files
print(allow_open_files(int(sys.argv[1])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _child(connections: int, soft: int) -> tuple[int, int]:
    """allow_open_files(connections) in a process started with `soft` open files allowed."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(connections)],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        capture_output=True, text=True, check=True,
    )
    answer, limit = done.stdout.split()
    return int(answer), int(limit)


def test_the_soft_limit_is_raised_to_hold_the_connection_caps() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = min(600 + SPARE, hard)
    assert _child(600, 256) == (wanted, wanted)
    # Already enough: left as it is.
    assert _child(100, 256) == (100 + SPARE, 256)
