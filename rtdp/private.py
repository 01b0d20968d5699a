"""Files only the server's own user may read: the data directory (0700) and what it creates in it (0600)."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only; an existing directory keeps the mode it was given."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists: SQLite then creates its -wal and -shm files
    with the same mode (it copies the database file's), instead of 0644 from the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
