"""Judging points against alert rules, where every committed point passes once: the bridge's writer
(`rtdp bridge`, and `rtdp serve`'s intake, the same writer). So each point is judged once, by the process
that stored it, inside the transaction that stored it.

Cheap per point: the enabled rules live in memory, indexed by axis id (`RuleIndex`), reloaded when the
alerts revision moved (rtdp.revision.ALERTS: one single-row read per batch, never a query per point). A
batch with no point on an axis with rules costs that read and a dictionary look-up per point. A batch
with such points reads those rules' states in one query (locked until the commit: two bridges judging the
same rule take turns, so each transition happens once), steps each rule through its points, and writes
back what changed and the events (each with the point that caused it) in the same transaction. The
alerts go to rtdp.alert_actions' worker after the commit.

Time-based judgements (a `silent` rule's silence, an `above`/`below` condition held `for_s` seconds with no
point since, a firing rule's repeat) need no point: the `Sweeper` does them, in one process at a time,
the holder of a lease row in the database (`AlertLease`), renewed every sweep and taken over by another
process once it lapsed.

A rule's state (ok or firing, since when, the condition pending since, the last value) is in its row:
it survives restarts, and whichever process stores the next point carries on from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from rtdp import revision
from rtdp.alert_actions import ActionWorker, Alert, Publish
from rtdp.casts import YCast, y_json
from rtdp.logs import RateLimitedLog
from rtdp.models import AlertEvent, AlertLease, AlertRule, Axis, Feed, RightsRevision, User
from rtdp.permissions import Access, allowed
from rtdp.settings import Settings
from rtdp.store.dialect import dialect_of, execute
from rtdp.store.write import StoredPoint
from rtdp.topic import FeedTopic

log = logging.getLogger("rtdp.alerts")

SWEEP_PERIOD = 0.5
LEASE_SECONDS = 5.0
LEASE_NAME = "sweeper"


@dataclass(frozen=True, slots=True)
class Rule:
    """An enabled rule as the index keeps it: what judging and acting need, nothing read per point."""

    id: int
    name: str
    feed: str
    axis: str
    axis_id: int
    kind: str
    threshold: float | None
    hysteresis: float
    for_s: float
    value: float | None
    silent_s: float | None
    severity: str
    repeat_min: float | None
    actions: tuple[dict[str, Any], ...]
    secret: str
    owner_id: int
    y_cast: YCast


@dataclass(slots=True)
class State:
    """A rule's row's state columns, stepped through a batch's points; `dirty` once any changed."""

    state: str
    since: float | None
    pending_since: float | None
    last_y: float | None
    notified: float | None
    dirty: bool = False


Event = tuple[int, str, float, int | None, float | None, float | None, bool]  # Statements.insert_event's row


_STATE_COLUMNS = (AlertRule.id, AlertRule.state, AlertRule.since, AlertRule.pending_since, AlertRule.last_y,
                  AlertRule.notified)


def _states(ids: Iterable[int]) -> dict[int, State]:
    """The rules' states as committed (callers hold the states' revision: nobody changes them meanwhile)."""
    found: dict[int, State] = {}
    ids = sorted(ids)
    for start in range(0, len(ids), 500):
        rows: Any = AlertRule.select(*_STATE_COLUMNS).where(AlertRule.id.in_(ids[start : start + 500])).tuples()
        for row in rows:
            found[row[0]] = State(row[1], row[2], row[3], row[4], row[5])
    return found


class Statements:
    """The SQL a judge runs on every batch, written once per database: Peewee's query building cost more
    than the database's work (each changed state was an UPDATE built anew, each batch's events an
    insert_many), and it ran on the writer thread between the judgement and the commit."""

    def __init__(self, db: pw.Database) -> None:
        p = db.param
        revisions = RightsRevision._meta.table_name
        self.revision = f"SELECT value FROM {revisions} WHERE id = {p}"
        self.bump = f"UPDATE {revisions} SET value = value + 1 WHERE id = {p}"
        states = RightsRevision.select(RightsRevision.value).where(RightsRevision.id == revision.ALERT_STATES)
        self.states_shared = dialect_of(db).for_update(states, share=True).sql()
        self.states_exclusive = dialect_of(db).for_update(states, share=False).sql()
        rule = AlertRule._meta
        columns = [rule.fields[name].column_name for name in ("state", "since", "pending_since", "last_y", "notified")]
        settings = ", ".join(f"{c} = {p}" for c in columns)
        self.save_state = f"UPDATE {rule.table_name} SET {settings} WHERE {AlertRule.id.column_name} = {p}"
        event = AlertEvent._meta
        names = [event.fields[n].column_name for n in ("rule", "state", "at", "point_id", "x", "y", "acknowledged")]
        values = ", ".join([p] * len(names))
        self.insert_event = f"INSERT INTO {event.table_name} ({', '.join(names)}) VALUES ({values})"


def _value(db: pw.Database, sql: str, params: Sequence[object]) -> int:
    row = execute(db, sql, params).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _save(db: pw.Database, sql: Statements, states: dict[int, State], events: list[Event]) -> None:
    """The changed states and the events, each kind in one executemany."""
    rows = [(st.state, st.since, st.pending_since, st.last_y, st.notified, rule_id)
            for rule_id, st in states.items() if st.dirty]
    if rows:
        db.cursor().executemany(sql.save_state, rows)  # type: ignore[no-untyped-call]
    if events:
        db.cursor().executemany(sql.insert_event, events)  # type: ignore[no-untyped-call]


def step(rule: Rule, st: State, y: float, now: float) -> str | None:
    """Move `st` by one point of value `y` at `now`; the event it causes (firing, ok, changed) or None.

    above: firing once y > threshold (held for_s seconds, if given), ok again once y <= threshold -
    hysteresis. below: the mirror. changes: each change of value is an event; with `value`, firing while
    the value is that one. silent: a point ends the silence."""
    kind = rule.kind
    if kind == "above" or kind == "below":
        threshold = rule.threshold
        assert threshold is not None
        if kind == "above":
            on, off = y > threshold, y <= threshold - rule.hysteresis
        else:
            on, off = y < threshold, y >= threshold + rule.hysteresis
        if st.state == "firing":
            if off:
                _set(st, "ok", now)
                return "ok"
            return None
        if not on:
            if st.pending_since is not None:
                st.pending_since, st.dirty = None, True
            return None
        if rule.for_s > 0:
            if st.pending_since is None:
                st.pending_since, st.dirty = now, True
            if now - st.pending_since < rule.for_s:
                return None
        _set(st, "firing", now)
        return "firing"
    if kind == "changes":
        last = st.last_y
        if last != y:
            st.last_y, st.dirty = y, True
        if rule.value is None:
            return "changed" if last is not None and last != y else None
        if y == rule.value and st.state == "ok" and last != y:
            _set(st, "firing", now)
            return "firing"
        if y != rule.value and st.state == "firing":
            _set(st, "ok", now)
            return "ok"
        return None
    if kind == "silent" and st.state == "firing":
        _set(st, "ok", now)
        return "ok"
    return None


def _set(st: State, state: str, now: float) -> None:
    st.state, st.since, st.pending_since, st.dirty = state, now, None, True
    if state == "firing":
        st.notified = now


class RuleIndex:
    """The enabled rules by axis id, reloaded when the alerts revision moved. Used by one thread."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.by_axis: dict[int, list[Rule]] = {}
        self.timed: list[Rule] = []  # silent, for_s or repeat: the sweeper's
        self.revision: int | None = None
        self._sql: Statements | None = None

    def statements(self) -> Statements:
        if self._sql is None:  # built at first use: the models are bound to the database by then
            self._sql = Statements(self.db)
        return self._sql

    def refresh(self) -> None:
        """Reload if the revision moved (one single-row read)."""
        now = _value(self.db, self.statements().revision, (revision.ALERTS,))
        if now == self.revision:
            return
        rules = list(AlertRule.select().where(AlertRule.enabled == True))  # noqa: E712 -- peewee expression
        feed_ids = {r.feed_id for r in rules}
        axis_ids = {r.axis_id for r in rules}
        feeds = {f.id: f for f in Feed.select(Feed.id, Feed.name, Feed.y_cast).where(Feed.id.in_(feed_ids))}
        axes = {a.id: a.name for a in Axis.select(Axis.id, Axis.name).where(Axis.id.in_(axis_ids))}
        by_axis: dict[int, list[Rule]] = {}
        timed: list[Rule] = []
        for row in rules:
            feed = feeds.get(row.feed_id)
            if feed is None or row.axis_id not in axes:
                continue  # removed with its feed or axis meanwhile
            rule = Rule(
                row.id, row.name, feed.name, axes[row.axis_id], row.axis_id, row.kind, row.threshold,
                row.hysteresis or 0.0, row.for_s or 0.0, row.value, row.silent_s, row.severity, row.repeat_min,
                tuple(json.loads(row.actions)), row.secret, row.owner_id, YCast(feed.y_cast),
            )
            by_axis.setdefault(rule.axis_id, []).append(rule)
            if rule.kind == "silent" or rule.for_s > 0 or rule.repeat_min:
                timed.append(rule)
        self.by_axis, self.timed, self.revision = by_axis, timed, now


def _point(point: StoredPoint | None, rule: Rule) -> dict[str, Any] | None:
    if point is None:
        return None
    y: float | int | bool = bool(point.y) if rule.y_cast is YCast.BOOL else y_json(point.y, rule.y_cast)
    return {"id": point.id, "x": point.x, "y": y}


def _alert(rule: Rule, state: str, now: float, point: StoredPoint | None, repeat: bool = False) -> Alert:
    return Alert(
        rule.id, rule.name, rule.severity, rule.kind, rule.feed, rule.axis, state, now, _point(point, rule),
        rule.actions, rule.secret, rule.owner_id, repeat,
    )


def _event(rule: Rule, state: str, now: float, point: StoredPoint | None) -> Event:
    if point is None:
        return (rule.id, state, now, None, None, None, False)
    return (rule.id, state, now, point.id, point.x, point.y, False)


def state_revision(db: pw.Database, sql: Statements, *, share: bool) -> int:
    """The alert states' revision, locked until the commit: for writing (share=False), which every state
    change takes before it changes anything, or against writers (share=True). So a judge holding it sees
    states nobody changes before it commits. Created on first use."""
    query, params = sql.states_shared if share else sql.states_exclusive
    rows = execute(db, query, params).fetchall()
    if not rows:
        revision.bump(revision.ALERT_STATES)
        rows = execute(db, query, params).fetchall()
    return int(rows[0][0])


def change_states(db: pw.Database) -> None:
    """Inside a transaction that changes rules' states outside a judge (a changed rule starts from ok): take
    the states' revision as a judge does for a transition, and move it, so cached states are dropped."""
    sql = Statements(db)
    state_revision(db, sql, share=False)
    execute(db, sql.bump, (revision.ALERT_STATES,))


@dataclass(frozen=True, slots=True)
class Band:
    """Values that cannot change any rule of one axis in its cached state: a batch whose points all lie
    strictly between `low` and `high` (and, with `exact`, all equal it) is quiet. Conservative: a point on
    a boundary is judged properly, never skipped."""

    low: float = -math.inf
    high: float = math.inf
    exact: float | None = None
    never: bool = False  # some rule must see every point (pending for_s, changes without a last value)

    def quiet(self, low: float, high: float) -> bool:
        if self.never or not (self.low < low and high < self.high):
            return False
        return self.exact is None or low == high == self.exact


def band_of(rules: list[Rule], states: dict[int, State]) -> Band:
    low, high, exact = -math.inf, math.inf, None
    for rule in rules:
        st = states.get(rule.id)
        if st is None:
            return Band(never=True)
        if rule.kind in ("above", "below"):
            assert rule.threshold is not None
            if st.pending_since is not None:
                return Band(never=True)
            if rule.kind == "above":
                if st.state == "firing":
                    low = max(low, rule.threshold - rule.hysteresis)
                else:
                    high = min(high, rule.threshold)
            elif st.state == "firing":
                high = min(high, rule.threshold + rule.hysteresis)
            else:
                low = max(low, rule.threshold)
        elif rule.kind == "changes":
            if st.last_y is None or (exact is not None and exact != st.last_y):
                return Band(never=True)
            exact = st.last_y
        elif rule.kind == "silent" and st.state == "firing":
            return Band(never=True)
    return Band(low, high, exact)


class Judge:
    """Judges committed points on the writer thread, inside the writer's transaction (`judge`).

    The states of the rules it has seen are cached, valid while the alert states' revision has not moved;
    from them each axis gets a `Band` of values that change nothing. A batch whose points on an axis all
    lie inside its band costs a min and a max (and the revision read under a shared lock); only the rules
    of other axes are stepped point by point, and a change of state bumps the revision in the same
    transaction, holding it exclusively: so two bridges never both make the same transition."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.index = RuleIndex(db)
        # Counters for /metrics (bridge.metrics), written on the writer thread only.
        self.judged = 0  # points on axes with rules
        self.steps = 0  # rules stepped through a point (the others' bands said the point changes nothing)
        self.transitions = 0
        self._states: dict[int, State] = {}
        self._bands: dict[int, Band] = {}
        self._states_revision: int | None = None
        self._index_revision: int | None = None

    def forget(self) -> None:
        """Drop the cached states (after a failed transaction: they may hold what was rolled back)."""
        self._states.clear()
        self._bands.clear()
        self._states_revision = None

    def _band(self, axis_id: int) -> Band:
        band = self._bands.get(axis_id)
        if band is None:
            band = self._bands[axis_id] = band_of(self.index.by_axis[axis_id], self._states)
        return band

    def _load(self, rule_ids: Iterable[int]) -> None:
        missing = [i for i in rule_ids if i not in self._states]
        if missing:
            self._states.update(_states(missing))

    def judge(self, points: Sequence[StoredPoint]) -> list[Alert]:
        """Inside the transaction that stored `points` (id order): the alerts it causes, already recorded."""
        self.index.refresh()
        if self.index.revision != self._index_revision:
            self._index_revision = self.index.revision
            self.forget()
        by_axis = self.index.by_axis
        if not by_axis or not points:
            return []
        # One pass, nothing allocated per point: the lowest and highest y per axis with rules. Most batches
        # end here, every axis's values inside its band.
        spans: dict[int, list[float]] = {}
        judged = 0
        for _, axis_id, _, y in points:
            if axis_id in by_axis:
                judged += 1
                span = spans.get(axis_id)
                if span is None:
                    spans[axis_id] = [y, y]
                elif y < span[0]:
                    span[0] = y
                elif y > span[1]:
                    span[1] = y
        if not spans:
            return []
        self.judged += judged

        def busy() -> list[int]:
            return [a for a, (low, high) in spans.items() if not self._band(a).quiet(low, high)]

        busy_axes = busy()
        exclusive = bool(busy_axes)
        sql = self.index.statements()
        current = state_revision(self.db, sql, share=not exclusive)
        if current != self._states_revision:
            self.forget()
            self._states_revision = current
            self._load(rule.id for axis_id in spans for rule in by_axis[axis_id])
            busy_axes = busy()
            if busy_axes and not exclusive:
                current = state_revision(self.db, sql, share=False)  # rare: a stale cache and a transition at once
        if not busy_axes:
            return []
        self._load(rule.id for axis_id in busy_axes for rule in by_axis[axis_id])
        now = time.time()
        alerts: list[Alert] = []
        events: list[Event] = []
        changed: dict[int, State] = {}
        self._states_revision = None  # until this batch's changes are recorded (an error leaves none cached)
        for axis_id in busy_axes:
            self._bands.pop(axis_id, None)
        stepped = set(busy_axes)
        for point in points:
            if point.axis_id not in stepped:
                continue
            rules = by_axis[point.axis_id]
            self.steps += len(rules)
            for rule in rules:
                st = self._states[rule.id]
                happened = step(rule, st, point.y, now)
                if st.dirty:
                    changed[rule.id] = st
                if happened is not None:
                    events.append(_event(rule, happened, now, point))
                    alerts.append(_alert(rule, happened, now, point))
        if changed:
            _save(self.db, sql, changed, events)
            for st in changed.values():
                st.dirty = False
            execute(self.db, sql.bump, (revision.ALERT_STATES,))  # the row exists: state_revision made it
            current += 1
        self._states_revision = current
        self.transitions += len(events)
        return alerts


class Sweeper:
    """The time-based judgements, by the holder of the lease; `sweep()` once per SWEEP_PERIOD."""

    def __init__(self, db: pw.Database, holder: str | None = None) -> None:
        self.db = db
        self.holder = holder or f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.index = RuleIndex(db)
        self.holding = False
        self.transitions = 0  # counters for /metrics, written on the sweeper's thread only
        self.repeats = 0

    def _take_lease(self, now: float) -> bool:
        taken = AlertLease.update(holder=self.holder, expires=now + LEASE_SECONDS).where(
            (AlertLease.name == LEASE_NAME) & ((AlertLease.holder == self.holder) | (AlertLease.expires < now))
        ).execute()
        if taken:
            return True
        if AlertLease.select().where(AlertLease.name == LEASE_NAME).exists():
            return False
        try:
            with self.db.atomic():
                AlertLease.insert(name=LEASE_NAME, holder=self.holder, expires=now + LEASE_SECONDS).execute()
        except pw.IntegrityError:
            return False
        return True

    def release(self) -> None:
        AlertLease.delete().where((AlertLease.name == LEASE_NAME) & (AlertLease.holder == self.holder)).execute()
        self.holding = False

    def sweep(self) -> list[Alert]:
        """One round, in one write transaction: the lease, then silences, for_s and repeats. With no
        time-based rule, only the rules' revision is read: no write transaction taken from the writer."""
        self.index.refresh()
        if not self.index.timed:
            return []
        with dialect_of(self.db).write_transaction(self.db):
            now = time.time()
            self.holding = self._take_lease(now)
            if not self.holding:
                return []
            self.index.refresh()
            timed = self.index.timed
            if not timed:
                return []
            sql = self.index.statements()
            state_revision(self.db, sql, share=False)
            states = _states({r.id for r in timed})
            silent_axes = [r.axis_id for r in timed if r.kind == "silent"]
            last_seen: dict[int, float | None] = {}
            if silent_axes:
                rows: Any = Axis.select(Axis.id, Axis.last_seen).where(Axis.id.in_(silent_axes)).tuples()
                last_seen = {row[0]: row[1] for row in rows}
            alerts: list[Alert] = []
            events: list[Event] = []
            for rule in timed:
                st = states.get(rule.id)
                if st is None:
                    continue
                happened = None
                if st.state == "ok" and rule.kind == "silent" and rule.silent_s is not None:
                    quiet_since = max(last_seen.get(rule.axis_id) or 0.0, st.since or 0.0)
                    if now - quiet_since >= rule.silent_s:
                        happened = "firing"
                elif st.state == "ok" and st.pending_since is not None and now - st.pending_since >= rule.for_s:
                    happened = "firing"
                if happened is not None:
                    _set(st, happened, now)
                    events.append(_event(rule, happened, now, None))
                    alerts.append(_alert(rule, happened, now, None))
                elif st.state == "firing" and rule.repeat_min and now - (st.notified or 0.0) >= rule.repeat_min * 60:
                    st.notified, st.dirty = now, True
                    alerts.append(_alert(rule, "firing", now, None, repeat=True))
                    self.repeats += 1
            if any(st.dirty for st in states.values()):
                _save(self.db, sql, states, events)
                execute(self.db, sql.bump, (revision.ALERT_STATES,))
            self.transitions += len(events)
            return alerts


def may_publish(owner_id: int, topic: str) -> bool:
    """Whether a rule's owner may publish to its extra topic now (the one permission rule)."""
    user = User.get_or_none(User.id == owner_id)
    feed = Feed.get_or_none(Feed.name == FeedTopic.parse(topic).feed)
    if user is None or feed is None or not user.is_active:
        return False
    from rtdp.accounts import principal_for

    return allowed(principal_for(user, None), feed, Access.WRITE)


def save_results(results: dict[int, str]) -> None:
    """The webhooks' last results, one statement for all (the writer waits while this holds SQLite)."""
    db, p = AlertRule._meta.database, AlertRule._meta.database.param
    sql = f"UPDATE {AlertRule._meta.table_name} SET {AlertRule.last_result.column_name} = {p} WHERE id = {p}"
    rows = [(text, rule_id) for rule_id, text in results.items()]
    with db.atomic():
        db.cursor().executemany(sql, rows)  # type: ignore[no-untyped-call]


class Alerting:
    """What a process that stores points runs for alerts: the judge (called by the writer), the sweeper
    thread and the action worker. `start(publish)` once MQTT messages can be sent; `stop()` at the end."""

    def __init__(self, db: pw.Database, settings: Settings, publish: Publish | None = None) -> None:
        self.db = db
        self.settings = settings
        self.judge = Judge(db)
        self.sweeper = Sweeper(db)
        self.actions = ActionWorker(settings, publish, may_publish=may_publish, save_results=save_results)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ratelog = RateLimitedLog(log)

    def start(self, publish: Publish | None = None) -> None:
        self.actions.start(publish)
        self._thread = threading.Thread(target=self._sweep_loop, name="rtdp-alert-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.actions.stop()

    def submit(self, alerts: list[Alert]) -> None:
        if alerts:
            self.actions.submit(alerts)

    def _sweep_loop(self) -> None:
        try:
            while not self._stop.wait(SWEEP_PERIOD):
                try:
                    self.submit(self.sweeper.sweep())
                except pw.PeeweeException as exc:
                    self._ratelog.warning("sweep", "alert sweep failed (database): %s", exc)
                    _close(self.db)
            try:
                if self.sweeper.holding:
                    self.sweeper.release()
            except pw.PeeweeException:
                pass
        finally:
            _close(self.db)


def _close(db: pw.Database) -> None:
    try:
        db.close()
    except Exception:  # noqa: BLE001 -- this thread's connection, broken or not: dropped
        pass

