"""The rights revision: one number in the database, bumped by every change to who may do what (a share
added or removed, a feed made public or private or given to another owner, a group's members, a user
disabled or made admin).

Viewers and the embedded broker cache permission decisions and verified logins for a few seconds
(`Settings.decision_ttl`, `credential_ttl`). Each runs a `RevisionWatcher` that reads this one row
every `POLL_PERIOD` seconds (an indexed single-row read) and drops its caches when the number moved, so
a change made by any process (a page, the API, the CLI) takes effect within that period on open SSE
streams and MQTT subscriptions too. The process that made the change can call `check()` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import peewee as pw

from rtdp.logs import RateLimitedLog
from rtdp.models import RightsRevision

logger = logging.getLogger(__name__)

POLL_PERIOD = 0.5
_ROW = 1
# The same table's second row counts changes to alert rules (rtdp.alerts): the processes that judge
# points reload their rule index when it moved.
ALERTS = 2
# The third row moves with every change of an alert rule's state (rtdp.alerting): judges that cache the
# states know from it, read under a lock in their transaction, that theirs are still right.
ALERT_STATES = 3


def bump(row: int = _ROW) -> None:
    """Record that rights (or, with `row=ALERTS`, alert rules) changed. Call inside the transaction of
    the change, so that a process that sees the new number also sees the change. Synchronous (Peewee)."""
    updated = RightsRevision.update(value=RightsRevision.value + 1).where(RightsRevision.id == row).execute()
    if updated:
        return
    try:
        # The first change ever; a savepoint, because another process may insert the row at the same time.
        with RightsRevision._meta.database.atomic():
            RightsRevision.insert(id=row, value=1).execute()
    except pw.IntegrityError:
        RightsRevision.update(value=RightsRevision.value + 1).where(RightsRevision.id == row).execute()


def current(row: int = _ROW) -> int:
    """The revision now (0 before the first change). Synchronous (Peewee). Plain SQL: the writer reads the
    alert rules' revision in every batch's transaction, and building the query cost more than running it."""
    db = RightsRevision._meta.database
    found = db.execute_sql(_current_sql(db.param), (row,)).fetchone()
    return int(found[0] or 0) if found else 0


@functools.lru_cache(maxsize=4)
def _current_sql(param: str) -> str:
    table, value, key = RightsRevision._meta.table_name, RightsRevision.value.column_name, RightsRevision.id.column_name
    return f"SELECT {value} FROM {table} WHERE {key} = {param}"


class RevisionWatcher:
    """Calls `on_change` (on the event loop) whenever the revision read by `read` moves.

    `read` runs `current` somewhere that may block (the caller's database thread pool)."""

    def __init__(
        self, read: Callable[[], Awaitable[int]], on_change: Callable[[], None], period: float = POLL_PERIOD
    ) -> None:
        self.read = read
        self.on_change = on_change
        self.period = period
        self.seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(logger)

    async def check(self, *, changed: bool = False) -> bool:
        """Read the revision now; True (and `on_change` called) if it moved since the last read, or
        if `changed`: this process has just changed rights itself."""
        value = await self.read()
        moved = self.seen is not None and value != self.seen
        self.seen = value
        if moved or changed:
            self.on_change()
        return moved or changed

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtdp-rights-revision")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except pw.PeeweeException as exc:
                # The caches still expire on their own (their lifetimes); try again next period.
                self._log.warning("revision-db", "rights revision not read, database error: %s", exc)
            await asyncio.sleep(self.period)
