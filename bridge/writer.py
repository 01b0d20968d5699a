"""The batching writer: messages in, one transaction out. Knows the database and the codec, not MQTT.

Everything a batch needs is recomputed from the raw messages on every attempt (routes, decoding), so a
retry after a database failure, or after a cached axis turned out to be gone, starts clean.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import peewee as pw

from bridge.errors import Rejected
from bridge.routes import Route, Routes, errors_topic_for
from bridge.stats import Stats
from rtdp import catalog, codec, store
from rtdp.alert_actions import Alert
from rtdp.alerting import Alerting
from rtdp.codec import Sample
from rtdp.errors import InvalidInput
from rtdp.handoff import Handoff
from rtdp.logs import RateLimitedLog
from rtdp.models import Rejection
from rtdp.notices import AxisOf, ErrorNotice, encode_error, encode_stored
from rtdp.settings import Settings
from rtdp.topic import stored_topic

log = logging.getLogger("rtdp.bridge")

# The Rejection table keeps about this many recent rows (a dashboard needs the latest, not all).
REJECTIONS_KEPT = 10_000
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0

# Errors that mean "the database is not there right now" (locked, restarting, connection killed):
# retrying the same batch is right. Other database errors may be caused by the data itself.
UNAVAILABLE = (pw.OperationalError, pw.InterfaceError)
DATABASE_ERRORS = (pw.DatabaseError, pw.InterfaceError)


class Incoming(NamedTuple):
    """A message as the network thread handed it over. A NamedTuple: one is built per message on the
    network thread, and a frozen dataclass's __init__ (a setattr per field) cost several times more."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    arrived: float
    # Which connection delivered it: a message id means nothing to the broker after a reconnect.
    generation: int = 0
    # The publisher's user id when the message may create its feed (embedded broker only, bridge.routes).
    creator: int | None = None
    # The embedded broker's future for this message (broker.acks), resolved once its batch committed:
    # then the publisher gets its PUBACK. Only the intake touches it; None over a subscription.
    settled: asyncio.Future[None] | None = None
    # A point from HTTP ingestion in the same process (rtdp.handoff): already cast, with its receipt.
    handoff: Handoff | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to publish after the commit."""

    topic: str
    payload: bytes


@dataclass
class BatchResult:
    stored_points: int = 0
    stored_messages: int = 0
    notices: list[Notice] = field(default_factory=list)
    rejected: int = 0
    # Why each refused message was refused, by its index in the batch.
    refused: dict[int, Rejected] = field(default_factory=dict)


@dataclass(slots=True)
class _Prepared:
    message: Incoming
    route: Route | None = None
    samples: list[Sample] | None = None
    rejection: Rejected | None = None


class Writer:
    """Turns batches of messages into stored points and rejections. Runs on one thread.

    `db` is the process's opened database (rtdp.database.open_database), the one the models are bound
    to: the writer runs its transactions and its thread's connection on it, and rtdp.store's
    functions inside those transactions reach the same object through the models.
    """

    def __init__(
        self,
        db: pw.Database,
        settings: Settings,
        stats: Stats,
        routes: Routes | None = None,
        alerting: Alerting | None = None,
    ) -> None:
        self.db = db
        # Judges the stored points against the alert rules inside the transaction that stored them; their
        # actions are queued after the commit (rtdp.alerting).
        self.alerting = alerting
        self.settings = settings
        self.tz = settings.tz
        self.stats = stats
        self.routes = routes or Routes(catalog.Policy.of(settings))
        self.ratelog = RateLimitedLog(log)

    def write(self, messages: Sequence[Incoming], abandon: threading.Event | None = None) -> BatchResult | None:
        """Store `messages` in one transaction, retrying with back-off while the database is unavailable.

        Returns None only if `abandon` was set before a commit succeeded (nothing is stored; do not ack).
        """
        delay = BACKOFF_MIN
        data_failures = 0
        while True:
            try:
                return self._attempt(messages, isolate=data_failures >= 2)
            except DATABASE_ERRORS as failure:
                exc = _cause(failure)
                self.stats.db_failures += 1
                if not isinstance(exc, UNAVAILABLE):
                    data_failures += 1
                self.ratelog.log(
                    logging.WARNING, "db", "database write failed, retrying in %.1fs: %s: %s",
                    delay, type(exc).__name__, str(exc).strip()[:200],
                )
                self._reset()
            if abandon is not None and abandon.wait(delay):
                return None
            if abandon is None:
                time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _reset(self) -> None:
        # A killed PostgreSQL backend leaves a dead connection; the next attempt opens a new one. The
        # route cache goes too: a foreign-key error means a cached axis was deleted.
        self.routes.clear()
        if self.alerting is not None:
            self.alerting.judge.forget()  # its cached alert states may hold what the rollback undid
        try:
            self.db.close()
        except Exception:  # noqa: BLE001 -- closing a broken connection may fail in any way; we drop it anyway
            pass

    def _prepare(self, message: Incoming) -> _Prepared:
        prepared = _Prepared(message)
        try:
            route = self.routes.resolve(message.topic, message.creator)
            # A retained message comes again on every subscribe: with no x of its own it would be stored
            # again at a new time. NaN as "now" marks the samples that took the default x.
            now = math.nan if message.retain else message.arrived
            handoff = message.handoff
            if handoff is not None and handoff.casts == route.casts:
                samples = list(handoff.samples)  # cast by the viewer for these casts: stored as they are
            else:
                samples = codec.decode(
                    message.payload, route.casts, now=now, tz=self.tz, max_size=self.settings.max_payload
                )
            if message.retain and any(math.isnan(s.x) for s in samples):
                raise Rejected(
                    "retained_without_x",
                    "retained message without its own x: it would be stored again on every subscribe; "
                    "publish with retain off, or include x",
                )
            prepared.route = self.routes.with_axis(message.topic, route, message.creator)
            prepared.samples = samples
        except Rejected as exc:
            prepared.rejection = exc
        except InvalidInput as exc:
            prepared.rejection = Rejected(exc.code, exc.message, **exc.detail)
        return prepared

    def _attempt(self, messages: Sequence[Incoming], *, isolate: bool) -> BatchResult:
        self.db.connect(reuse_if_open=True)
        prepared = [self._prepare(m) for m in messages]
        if isolate:
            return self._isolated(prepared)
        started = time.perf_counter()
        alerts: list[Alert] = []
        with self.db.atomic():
            stored = self._commit(prepared, alerts)
        committed = time.time()
        self._submit(alerts)
        # A rejected message was not stored: it has no store delay. Messages that arrived together (one
        # network read) are observed together.
        arrivals = Counter(p.message.arrived for p in prepared if p.rejection is None)
        for arrived, times in arrivals.items():
            self.stats.store_delay_hist.observe(max(0.0, committed - arrived), times)
        return self._result(prepared, [stored], time.perf_counter() - started)

    def _isolated(self, prepared: list[_Prepared]) -> BatchResult:
        """Last resort after repeated data errors: one transaction per message, so one message the
        database refuses (not one the codec refused) cannot block the rest forever."""
        # A notice per commit: another writer's commit of the same feed may come in between, and a
        # notice says which head it follows.
        commits: list[store.Written] = []
        started = time.perf_counter()
        for item in prepared:
            alerts: list[Alert] = []
            try:
                with self.db.atomic():
                    commits.append(self._commit([item], alerts))
                self._submit(alerts)
            except UNAVAILABLE:
                raise
            except pw.DatabaseError as exc:
                item.rejection = Rejected("database", f"the database refused the points: {str(exc).strip()[:200]}")
                item.samples = None
                with self.db.atomic():
                    self._commit([item], [])
        return self._result(prepared, commits, time.perf_counter() - started)

    def _submit(self, alerts: list[Alert]) -> None:
        if alerts and self.alerting is not None:
            self.alerting.submit(alerts)

    def _commit(self, prepared: list[_Prepared], alerts: list[Alert]) -> store.Written:
        """Write the batch (inside the caller's transaction); the alerts its points cause go to `alerts`."""
        received = time.time()
        pairs: list[tuple[int, Sample]] = []
        # The routes know each axis's feed (an existing axis's route always has both ids): write_points
        # need not ask.
        feeds: dict[int, int] = {}
        for p in prepared:
            route = p.route
            if route is not None and route.axis_id is not None and route.feed_id is not None and p.samples:
                pairs += [(route.axis_id, s) for s in p.samples]
                feeds[route.axis_id] = route.feed_id
        stored = store.write_points(pairs, received_at=received, feeds=feeds)
        if self.alerting is not None and stored:
            alerts.extend(self.alerting.judge.judge(stored))
        rows = []
        for p in prepared:
            if p.rejection is not None:
                _, feed, axis = errors_topic_for(p.message.topic)
                rows.append({"feed": feed, "axis": axis, "reason": p.rejection.message[:1000], "at": received})
        if rows:
            Rejection.insert_many(rows).execute()
            newest = Rejection.select(pw.fn.MAX(Rejection.id)).scalar() or 0
            if newest > REJECTIONS_KEPT:
                Rejection.delete().where(Rejection.id <= newest - REJECTIONS_KEPT).execute()
        return stored

    def _result(self, prepared: list[_Prepared], commits: list[store.Written], seconds: float) -> BatchResult:
        stored_points = sum(len(stored) for stored in commits)
        result = BatchResult(stored_points=stored_points)
        axes: dict[int, AxisOf] = {}
        for index, p in enumerate(prepared):
            if p.rejection is not None:
                result.rejected += 1
                result.refused[index] = p.rejection
                result.notices.append(self._rejection_notice(p.message, p.rejection))
            elif p.route is not None and p.route.axis_id is not None:
                result.stored_messages += 1
                route, axis_id = p.route, p.route.axis_id
                if axis_id not in axes:
                    axes[axis_id] = AxisOf(route.feed, route.axis, route.y_cast)
        for stored in commits:
            for feed, payload in encode_stored(stored, axes, stored.follows).items():
                result.notices.append(Notice(stored_topic(feed), payload))
        self.stats.record_batch(stored_points, result.stored_messages, seconds)
        return result

    def _rejection_notice(self, message: Incoming, rejection: Rejected) -> Notice:
        topic, _, _ = errors_topic_for(message.topic)
        self.stats.rejected[rejection.code] += 1
        self.ratelog.log(
            logging.INFO, rejection.code, "rejected a message on %r: %s", message.topic[:120], rejection.message
        )
        notice = ErrorNotice.of(rejection.message, rejection.code, rejection.detail, message.topic, message.payload)
        return Notice(topic, encode_error(notice))


def _cause(exc: BaseException) -> BaseException:
    """The error that ended a transaction. SQLite rolls back by itself on some errors ("database or disk is
    full"), and the rollback on leaving the transaction then fails with "cannot rollback - no transaction is
    active", which would hide why."""
    if "rollback" not in str(exc):
        return exc
    context = exc.__context__
    for _ in range(4):  # the failed rollback, wrapped by Peewee, then what made it fail
        if context is None:
            break
        if isinstance(context, DATABASE_ERRORS) and "rollback" not in str(context):
            return context
        context = context.__context__
    return exc
