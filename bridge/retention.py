"""The retention schedule: a thread that runs rtdp.retention.purge (and trims alert events) every
`retention_interval` seconds.

It runs where the writer runs (`rtdp bridge`, `rtdp serve`). Several bridges of a share group may
each run it: purges are idempotent, and each batch is its own short transaction.
"""

from __future__ import annotations

import logging
import threading
import time

import peewee as pw

from rtdp.errors import RtdpError
from rtdp.retention import EVENTS_KEPT, PurgeReport, purge, trim_alert_events
from rtdp.settings import Settings

log = logging.getLogger("rtdp.bridge.retention")


class RetentionScheduler:
    """`start()` purges once at once, then every `settings.retention_interval` seconds until `stop()`.

    With `retention_interval` 0 it does nothing. `db` is the process's opened database; the thread
    opens its own connection to it and closes it when it ends.
    """

    def __init__(self, settings: Settings, db: pw.Database) -> None:
        self.interval = settings.retention_interval
        self.db = db
        self.last: PurgeReport | None = None
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Set after each purge (done or failed): tests and callers wait on it instead of sleeping.
        self.ran = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rtdp-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the thread between two delete batches (a batch is a few milliseconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> PurgeReport | None:
        """One purge and one trim of the alert history now, in the calling thread; errors are logged and
        counted, never raised. The report is the purge's (None if it failed)."""
        try:
            report: PurgeReport | None = self._purge()
            self._trim()
        finally:
            self.runs += 1
            self.ran.set()
        return report

    def _purge(self) -> PurgeReport | None:
        try:
            report = purge(time.time(), stop=self._stop)
        except (pw.DatabaseError, pw.InterfaceError, RtdpError) as exc:
            self.failures += 1
            log.warning("retention: purge failed (will retry in %gs): %s", self.interval, exc)
            return None
        self.last = report
        if report.removed:
            log.info(
                "retention: removed %d points from %d axes in %d batches (%.2fs, longest transaction %.1f ms)",
                report.removed,
                len(report.axes),
                report.batches,
                report.seconds,
                report.longest * 1000,
            )
        return report

    def _trim(self) -> None:
        try:
            trimmed = trim_alert_events(stop=self._stop)
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            self.failures += 1
            log.warning("retention: trimming alert events failed (will retry in %gs): %s", self.interval, exc)
            return
        if trimmed:
            log.info("retention: removed %d old alert events (each rule keeps its newest %d)", trimmed, EVENTS_KEPT)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.run_once()
                if self._stop.wait(self.interval):
                    break
        finally:
            if not self.db.is_closed():
                # Peewee connections are per thread: this closes the purge thread's own.
                self.db.close()
