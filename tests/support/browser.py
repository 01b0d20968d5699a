"""Debian's Chromium for Playwright (tests and bench/graph_page.py): never a downloaded browser."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# As root in a sandbox with no network but loopback: no sandbox, no GPU, and no background
# connections (they would be refused many at a time by this machine's closed network).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
