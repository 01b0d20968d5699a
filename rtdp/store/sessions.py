"""The embedded broker's saved state: persistent MQTT sessions (who they authenticated as, their
subscriptions, the QoS 1/2 messages waiting for them, each saved once however many sessions wait for
it, and the QoS 2 publishes waiting for their PUBREL) and retained messages, so that a restart loses
none of them. `broker.persistence` decides what to save and when; this module reads and writes it.
Synchronous (Peewee): call it from a thread, never from an event loop."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import peewee as pw

from rtdp.models import (
    BrokerMessage,
    BrokerQueued,
    BrokerReceived,
    BrokerSession,
    BrokerSubscription,
    Feed,
    RetainedMessage,
)
from rtdp.store.dialect import INSERT_CHUNK, dialect_of
from rtdp.topic import feed_of_filter

T = TypeVar("T")


class Queued(NamedTuple):
    """A message waiting for one or more sessions, saved once (`BrokerMessage`); ids order each queue."""

    id: int
    topic: str
    payload: bytes
    qos: int


class Inflight(NamedTuple):
    """A message sent to a session with `packet_id` and not acknowledged; `released`: QoS 2 with its PUBREC
    received, so PUBREL is what is sent again."""

    message: Queued
    packet_id: int
    released: bool = False


class Retained(NamedTuple):
    topic: str
    feed_id: int | None  # the feed it was set on; None for a topic outside every feed
    payload: bytes
    qos: int | None


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A persistent session whole: its principal's keys (see `rtdp.models.BrokerSession`), its
    subscriptions, the messages queued for it while offline, those sent and not acknowledged, and the
    packet ids of its client's QoS 2 publishes waiting for their PUBREL."""

    client_id: str
    user_id: int | None
    token_id: int | None
    password_version: int | None
    service: bool
    disconnected: float | None
    subscriptions: Sequence[tuple[str, int]] = ()
    queued: Sequence[Queued] = ()
    inflight: Sequence[Inflight] = ()
    received: Sequence[int] = ()


@dataclass(slots=True)
class Changes:
    """What one commit saves, applied in this order: sessions removed, sessions saved whole (replacing
    what was saved of them), messages saved (`messages`, once each) and queued for sessions (`queued`:
    client id and message id; a session removed meanwhile gets none), each session's queued messages
    below an id dropped (`floors`: its full queue dropped its oldest), retained messages set (or, None,
    cleared), and with `sweep` the messages nobody waits for any more removed."""

    removed: list[str] = field(default_factory=list)
    sessions: list[SavedSession] = field(default_factory=list)
    messages: list[Queued] = field(default_factory=list)
    queued: list[tuple[str, int]] = field(default_factory=list)
    floors: dict[str, int] = field(default_factory=dict)
    retained: dict[str, Retained | None] = field(default_factory=dict)
    sweep: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.removed or self.sessions or self.messages or self.queued or self.floors or self.retained
            or self.sweep
        )


@dataclass(frozen=True, slots=True)
class Saved:
    """Everything saved, as `load` found it."""

    sessions: list[SavedSession]
    retained: list[Retained]
    last_queued_id: int  # the highest message id there ever was here (0: none)


def _chunks(items: Sequence[T], size: int = INSERT_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _remove_sessions(client_ids: Sequence[str]) -> None:
    for chunk in _chunks(client_ids):
        BrokerQueued.delete().where(BrokerQueued.session.in_(chunk)).execute()
        BrokerReceived.delete().where(BrokerReceived.session.in_(chunk)).execute()
        BrokerSubscription.delete().where(BrokerSubscription.session.in_(chunk)).execute()
        BrokerSession.delete().where(BrokerSession.client_id.in_(chunk)).execute()


def _sweep() -> None:
    # Messages nobody waits for any more (their sessions received, dropped or lost them).
    db = BrokerMessage._meta.database
    db.execute_sql(
        "DELETE FROM broker_message WHERE NOT EXISTS"
        " (SELECT 1 FROM broker_pending WHERE broker_pending.message_id = broker_message.id)"
    )


def load(expired_before: float, now: float) -> Saved:
    """Remove the sessions offline since before `expired_before` and retained messages whose feed is
    gone, then read the rest. A session saved while connected (the process was killed) counts as
    disconnected `now`."""
    db = BrokerSession._meta.database
    with dialect_of(db).write_transaction(db):
        expired = BrokerSession.select(BrokerSession.client_id).where(BrokerSession.disconnected < expired_before)
        _remove_sessions([row.client_id for row in expired])
        _remove_orphaned_retained()
        _sweep()
        subscriptions: dict[str, list[tuple[str, int]]] = {}
        rows: Any = BrokerSubscription.select(
            BrokerSubscription.session, BrokerSubscription.topic_filter, BrokerSubscription.qos
        )
        for session_id, topic_filter, qos in rows.tuples():
            subscriptions.setdefault(session_id, []).append((topic_filter, qos))
        messages: dict[int, Queued] = {}
        query: Any = BrokerMessage.select(
            BrokerMessage.id, BrokerMessage.topic, BrokerMessage.payload, BrokerMessage.qos
        )
        for row_id, topic, payload, qos in query.tuples():
            messages[row_id] = Queued(row_id, topic, bytes(payload), qos)
        queued: dict[str, list[Queued]] = {}
        inflight: dict[str, list[Inflight]] = {}
        query = BrokerQueued.select(
            BrokerQueued.session, BrokerQueued.message, BrokerQueued.packet_id, BrokerQueued.released
        ).order_by(BrokerQueued.message)
        for session_id, message_id, packet_id, released in query.tuples():
            message = messages[message_id]
            if packet_id is None:
                queued.setdefault(session_id, []).append(message)
            else:
                inflight.setdefault(session_id, []).append(Inflight(message, packet_id, bool(released)))
        received: dict[str, list[int]] = {}
        answered: Any = BrokerReceived.select(BrokerReceived.session, BrokerReceived.packet_id)
        for session_id, packet_id in answered.tuples():
            received.setdefault(session_id, []).append(packet_id)
        sessions = [
            SavedSession(
                row.client_id, row.user_id, row.token_id, row.password_version, bool(row.service),
                now if row.disconnected is None else row.disconnected,
                subscriptions.get(row.client_id, ()), queued.get(row.client_id, ()),
                inflight.get(row.client_id, ()), received.get(row.client_id, ()),
            )
            for row in BrokerSession.select()
        ]
        rows = RetainedMessage.select(
            RetainedMessage.topic, RetainedMessage.feed, RetainedMessage.payload, RetainedMessage.qos
        )
        retained = [Retained(topic, feed_id, bytes(payload), qos) for topic, feed_id, payload, qos in rows.tuples()]
        last = BrokerMessage.select(pw.fn.MAX(BrokerMessage.id)).scalar() or 0
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
    received = [(s.client_id, packet_id) for s in changes.sessions for packet_id in set(s.received)]
    for received_chunk in _chunks(received):
        fields = [BrokerReceived.session, BrokerReceived.packet_id]
        BrokerReceived.insert_many(received_chunk, fields=fields).execute()
    # Each message once, however many sessions wait for it (one saved before is kept as it is).
    messages = {m.id: m for m in changes.messages}
    pending: list[tuple[str, int, int | None, bool]] = []
    for s in changes.sessions:
        for m in s.queued:
            messages[m.id] = m
            pending.append((s.client_id, m.id, None, False))
        for inflight in s.inflight:
            messages[inflight.message.id] = inflight.message
            pending.append((s.client_id, inflight.message.id, inflight.packet_id, inflight.released))
    pending.extend((client_id, message_id, None, False) for client_id, message_id in changes.queued)
    # The busiest statements (a flood for offline sessions), hand-written: Peewee's insert_many cost more
    # than the database's work. A message queued twice for one session (overlapping subscriptions) is
    # saved once for it.
    db = BrokerQueued._meta.database
    p = db.param
    if messages:
        db.cursor().executemany(
            f"INSERT INTO broker_message (id, topic, payload, qos) VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING",
            [(m.id, m.topic, m.payload, m.qos) for m in messages.values()],
        )
    if pending:
        db.cursor().executemany(
            f"INSERT INTO broker_pending (session_id, message_id, packet_id, released) SELECT {p}, {p}, {p}, {p}"
            f" WHERE EXISTS (SELECT 1 FROM broker_session WHERE client_id = {p}) ON CONFLICT DO NOTHING",
            [(client_id, message_id, packet_id, released, client_id) for client_id, message_id, packet_id, released
             in pending],
        )
    for client_id, floor in changes.floors.items():
        BrokerQueued.delete().where(
            (BrokerQueued.session == client_id) & (BrokerQueued.message < floor) & BrokerQueued.packet_id.is_null()
        ).execute()
    if changes.sweep:
        _sweep()
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
