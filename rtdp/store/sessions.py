"""The embedded broker's saved state: persistent MQTT sessions (who they authenticated as, their
subscriptions, the QoS 1/2 messages waiting for them) and retained messages, so that a restart loses
none of them. `broker.persistence` decides what to save and when; this module reads and writes it.
Synchronous (Peewee): call it from a thread, never from an event loop."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import peewee as pw

from rtdp.models import BrokerQueued, BrokerSession, BrokerSubscription, Feed, RetainedMessage
from rtdp.store.dialect import INSERT_CHUNK, dialect_of
from rtdp.topic import feed_of_filter

T = TypeVar("T")


class Queued(NamedTuple):
    """A message waiting for a session, in `id` order."""

    id: int
    topic: str
    payload: bytes
    qos: int


class Retained(NamedTuple):
    topic: str
    feed_id: int | None  # the feed it was set on; None for a topic outside every feed
    payload: bytes
    qos: int | None


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A persistent session whole: its principal's keys (see `rtdp.models.BrokerSession`), its
    subscriptions and its waiting messages."""

    client_id: str
    user_id: int | None
    token_id: int | None
    password_version: int | None
    service: bool
    disconnected: float | None
    subscriptions: Sequence[tuple[str, int]] = ()
    queued: Sequence[Queued] = ()


@dataclass(slots=True)
class Changes:
    """What one commit saves, applied in this order: sessions removed, sessions saved whole (replacing
    what was saved of them), messages queued (for a session that is saved), each session's messages
    below an id dropped (`floors`: its full queue dropped its oldest), retained messages set (or, None,
    cleared)."""

    removed: list[str] = field(default_factory=list)
    sessions: list[SavedSession] = field(default_factory=list)
    queued: list[tuple[str, Queued]] = field(default_factory=list)
    floors: dict[str, int] = field(default_factory=dict)
    retained: dict[str, Retained | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.removed or self.sessions or self.queued or self.floors or self.retained)


@dataclass(frozen=True, slots=True)
class Saved:
    """Everything saved, as `load` found it."""

    sessions: list[SavedSession]
    retained: list[Retained]
    last_queued_id: int  # the highest queued message id there ever was here (0: none)


def _chunks(items: Sequence[T], size: int = INSERT_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _remove_sessions(client_ids: Sequence[str]) -> None:
    for chunk in _chunks(client_ids):
        BrokerQueued.delete().where(BrokerQueued.session.in_(chunk)).execute()
        BrokerSubscription.delete().where(BrokerSubscription.session.in_(chunk)).execute()
        BrokerSession.delete().where(BrokerSession.client_id.in_(chunk)).execute()


def load(expired_before: float, now: float) -> Saved:
    """Remove the sessions offline since before `expired_before` and retained messages whose feed is
    gone, then read the rest. A session saved while connected (the process was killed) counts as
    disconnected `now`."""
    db = BrokerSession._meta.database
    with dialect_of(db).write_transaction(db):
        expired = BrokerSession.select(BrokerSession.client_id).where(BrokerSession.disconnected < expired_before)
        _remove_sessions([row.client_id for row in expired])
        _remove_orphaned_retained()
        subscriptions: dict[str, list[tuple[str, int]]] = {}
        rows: Any = BrokerSubscription.select(
            BrokerSubscription.session, BrokerSubscription.topic_filter, BrokerSubscription.qos
        )
        for session_id, topic_filter, qos in rows.tuples():
            subscriptions.setdefault(session_id, []).append((topic_filter, qos))
        queued: dict[str, list[Queued]] = {}
        query: Any = BrokerQueued.select(
            BrokerQueued.session, BrokerQueued.id, BrokerQueued.topic, BrokerQueued.payload, BrokerQueued.qos
        ).order_by(BrokerQueued.id)
        for session_id, row_id, topic, payload, qos in query.tuples():
            queued.setdefault(session_id, []).append(Queued(row_id, topic, bytes(payload), qos))
        sessions = [
            SavedSession(
                row.client_id, row.user_id, row.token_id, row.password_version, bool(row.service),
                now if row.disconnected is None else row.disconnected,
                subscriptions.get(row.client_id, ()), queued.get(row.client_id, ()),
            )
            for row in BrokerSession.select()
        ]
        rows = RetainedMessage.select(
            RetainedMessage.topic, RetainedMessage.feed, RetainedMessage.payload, RetainedMessage.qos
        )
        retained = [Retained(topic, feed_id, bytes(payload), qos) for topic, feed_id, payload, qos in rows.tuples()]
        last = BrokerQueued.select(pw.fn.MAX(BrokerQueued.id)).scalar() or 0
    return Saved(sessions, retained, int(last))


def _remove_orphaned_retained() -> None:
    # A feed deleted through Peewee's recursive delete_instance sets nullable foreign keys to NULL instead
    # of deleting the rows: a feed topic's retained message without its feed is gone with it.
    rows: Any = RetainedMessage.select(RetainedMessage.topic).where(RetainedMessage.feed.is_null())
    orphans = [topic for (topic,) in rows.tuples() if feed_of_filter(topic) is not None]
    for chunk in _chunks(orphans):
        RetainedMessage.delete().where(RetainedMessage.topic.in_(chunk)).execute()


def save(batches: Sequence[Changes]) -> None:
    """Apply `batches` in order, in one transaction. A retained message whose feed was deleted meanwhile,
    or a message queued for a session removed meanwhile, is not saved."""
    db = BrokerSession._meta.database
    with dialect_of(db).write_transaction(db):
        for changes in batches:
            _apply(changes)


def _apply(changes: Changes) -> None:
    _remove_sessions(changes.removed + [s.client_id for s in changes.sessions])
    for chunk in _chunks(changes.sessions):
        BrokerSession.insert_many(
            [(s.client_id, s.user_id, s.token_id, s.password_version, s.service, s.disconnected) for s in chunk],
            fields=[
                BrokerSession.client_id, BrokerSession.user_id, BrokerSession.token_id,
                BrokerSession.password_version, BrokerSession.service, BrokerSession.disconnected,
            ],
        ).execute()
    subscriptions = [(s.client_id, f, qos) for s in changes.sessions for f, qos in s.subscriptions]
    for sub_chunk in _chunks(subscriptions):
        fields = [BrokerSubscription.session, BrokerSubscription.topic_filter, BrokerSubscription.qos]
        BrokerSubscription.insert_many(sub_chunk, fields=fields).execute()
    queued = [(s.client_id, q) for s in changes.sessions for q in s.queued]
    for queued_chunk in _chunks(queued):
        BrokerQueued.insert_many(
            [(q.id, client_id, q.topic, q.payload, q.qos) for client_id, q in queued_chunk],
            fields=[BrokerQueued.id, BrokerQueued.session, BrokerQueued.topic, BrokerQueued.payload, BrokerQueued.qos],
        ).execute()
    db = BrokerQueued._meta.database
    if changes.queued:
        # The busiest statement (a row per message for an offline session), hand-written: Peewee's
        # insert_many cost more than SQLite's work. A session removed meanwhile gets none.
        p = db.param
        sql = (
            f"INSERT INTO broker_queued (id, session_id, topic, payload, qos) SELECT {p}, {p}, {p}, {p}, {p}"
            f" WHERE EXISTS (SELECT 1 FROM broker_session WHERE client_id = {p})"
        )
        rows = [(q.id, client_id, q.topic, q.payload, q.qos, client_id) for client_id, q in changes.queued]
        db.cursor().executemany(sql, rows)
    for client_id, floor in changes.floors.items():
        BrokerQueued.delete().where((BrokerQueued.session == client_id) & (BrokerQueued.id < floor)).execute()
    if changes.retained:
        topics = list(changes.retained)
        for topic_chunk in _chunks(topics):
            RetainedMessage.delete().where(RetainedMessage.topic.in_(topic_chunk)).execute()
        kept = [r for r in changes.retained.values() if r is not None]
        feeds = _present(Feed.id, {r.feed_id for r in kept if r.feed_id is not None})
        kept = [r for r in kept if r.feed_id is None or r.feed_id in feeds]
        for retained_chunk in _chunks(kept):
            RetainedMessage.insert_many(
                [(r.topic, r.feed_id, r.payload, r.qos) for r in retained_chunk],
                fields=[RetainedMessage.topic, RetainedMessage.feed, RetainedMessage.payload, RetainedMessage.qos],
            ).execute()


def _present(column: Any, keys: set[Any]) -> set[Any]:
    """Which of `keys` are in `column` now."""
    found: set[Any] = set()
    ordered = list(keys)
    for chunk in _chunks(ordered):
        found.update(value for (value,) in column.model.select(column).where(column.in_(chunk)).tuples())
    return found


def close_connection() -> None:
    """Close the calling thread's connection (Peewee keeps one per thread): the broker's writer thread, last."""
    db = BrokerSession._meta.database
    if not db.is_closed():
        db.close()
