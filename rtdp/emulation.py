"""The emulator's switchboard, shared by the emulator and the viewer's `/tools` page: which simulated
sources there are, the feed each publishes to by default, and each source's on/off switch and saved
position (the EmulatorState table, never anything secret).

Here rather than in `emulator/` so that the viewer depends on `rtdp` only (DESIGN.md's package
table); the emulator's sources (emulator.sources) are built for exactly these names and feeds.

Synchronous Peewee: call from a thread, never from an event loop.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rtdp.errors import NotFound
from rtdp.models import EmulatorState

SourceState = dict[str, Any]

# The registry of sources: every source the emulator knows, in the order lists show them, with the feed
# it publishes to unless configured otherwise (None: this machine's, see `system_feed()`). The emulator's
# implementations register against these names (emulator.sources.Source); nothing else lists them.
DEFAULT_FEEDS: dict[str, str | None] = {
    "sine": "sin_wave_over_time_in_seconds",
    "door": "front_door",
    "x10": "x10_lamp",
    "random_walk": "temperature",
    "system": None,
}
SOURCES = tuple(DEFAULT_FEEDS)
PROC_STAT = "/proc/stat"


def system_feed() -> str:
    """`system_<hostname>`, reduced to the characters a feed name allows."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "_", socket.gethostname().split(".")[0]) or "host"
    return f"system_{host}"[:64]


def available(source: str) -> bool:
    """Whether this machine can run `source` (the system source reads Linux's /proc)."""
    return source != "system" or os.path.exists(PROC_STAT)


def default_feed(source: str) -> str:
    """The feed `source` publishes to unless configured otherwise."""
    feed = DEFAULT_FEEDS[check_source(source)]
    return system_feed() if feed is None else feed


@lru_cache(maxsize=1)
def source_feeds() -> dict[str, str | None]:
    """Each source's default feed name; None for a source that cannot run here."""
    return {name: default_feed(name) if available(name) else None for name in SOURCES}


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    enabled: bool
    state: SourceState
    updated: float | None


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise NotFound(f"unknown emulator source {source[:64]!r}; choose from {', '.join(SOURCES)}", source=source[:64])
    return source


def _decode(text: str) -> SourceState:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}  # a damaged state restarts the source from its defaults rather than stopping it
    return value if isinstance(value, dict) else {}


def load(source: str, *, default_enabled: bool = True) -> SourceStatus:
    """The source's row, created (enabled when `default_enabled`) the first time a source runs."""
    row = EmulatorState.get_or_none(EmulatorState.source == source)
    if row is None:
        # Two emulators starting together may both insert: the first wins, the second reads it back.
        EmulatorState.insert(source=source, enabled=default_enabled).on_conflict_ignore().execute()
        row = EmulatorState.get(EmulatorState.source == source)
    return SourceStatus(row.source, bool(row.enabled), _decode(row.state), row.updated)


def save_position(source: str, state: SourceState) -> None:
    """Store the position only: the switch belongs to whoever calls `set_enabled`."""
    text = json.dumps(state, separators=(",", ":"))
    updated = EmulatorState.update(state=text, updated=time.time()).where(EmulatorState.source == source).execute()
    if not updated:
        EmulatorState.insert(source=source, enabled=True, state=text).on_conflict_ignore().execute()


def set_enabled(source: str, on: bool) -> None:
    """Switch a source on or off; a running emulator notices within its poll interval (about a second)."""
    check_source(source)
    updated = (
        EmulatorState.update(enabled=on, updated=time.time()).where(EmulatorState.source == source).execute()
    )
    if not updated:
        EmulatorState.insert(source=source, enabled=on).on_conflict_ignore().execute()
        EmulatorState.update(enabled=on).where(EmulatorState.source == source).execute()


def enabled_sources(sources: list[str]) -> set[str]:
    """Which of `sources` are switched on; a source without a row counts as on."""
    rows = {
        row.source: bool(row.enabled)
        for row in EmulatorState.select(EmulatorState.source, EmulatorState.enabled).where(
            EmulatorState.source.in_(sources)
        )
    }
    return {name for name in sources if rows.get(name, True)}


def statuses() -> list[SourceStatus]:
    """Every known source with its switch and position, for `rtdp emulate --list` and the Tools page."""
    rows = {row.source: row for row in EmulatorState.select()}
    result = []
    for name in SOURCES:
        row = rows.get(name)
        if row is None:
            result.append(SourceStatus(name, True, {}, None))
        else:
            result.append(SourceStatus(name, bool(row.enabled), _decode(row.state), row.updated))
    return result
