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
    BrokerAudience,
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
    # Saved: messages with a lower id are in `queued` or not for it (whatever their audience says).
    floor: int = 0


@dataclass(slots=True)
class Changes:
    """What one commit saves, applied in this order: sessions removed, sessions saved whole (replacing
    what was saved of them), audiences (id, client ids) and the messages queued for them while they were
    offline (`messages`: each once, with its audience's id), each session's queued messages below an id
    dropped (`floors`: its full queue dropped its oldest), retained messages set (or, None, cleared), and
    with `sweep` the messages nobody waits for any more removed."""

    removed: list[str] = field(default_factory=list)
    sessions: list[SavedSession] = field(default_factory=list)
    audiences: list[tuple[int, Sequence[str]]] = field(default_factory=list)
    messages: list[tuple[Queued, int]] = field(default_factory=list)
    floors: dict[str, int] = field(default_factory=dict)
    retained: dict[str, Retained | None] = field(default_factory=dict)
    sweep: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.removed or self.sessions or self.messages or self.floors or self.retained or self.sweep
        )


@dataclass(frozen=True, slots=True)
class Saved:
    """Everything saved, as `load` found it."""

    sessions: list[SavedSession]
    retained: list[Retained]
    last_queued_id: int  # the highest message id there ever was here (0: none)
    last_audience_id: int = 0


def _chunks(items: Sequence[T], size: int = INSERT_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _remove_sessions(client_ids: Sequence[str]) -> None:
    for chunk in _chunks(client_ids):
        BrokerQueued.delete().where(BrokerQueued.session.in_(chunk)).execute()
        BrokerReceived.delete().where(BrokerReceived.session.in_(chunk)).execute()
        BrokerSubscription.delete().where(BrokerSubscription.session.in_(chunk)).execute()
        BrokerSession.delete().where(BrokerSession.client_id.in_(chunk)).execute()


_UNREFERENCED = "NOT EXISTS (SELECT 1 FROM broker_pending WHERE broker_pending.message_id = broker_message.id)"


def _floors() -> dict[str, int]:
    rows: Any = BrokerSession.select(BrokerSession.client_id, BrokerSession.floor)
    return dict(rows.tuples())


def _sweep() -> None:
    # Messages nobody waits for any more: below the floor of every session of their audience still saved
    # (received, dropped from a full queue, or its session gone), and not sent and unacknowledged.
    db = BrokerMessage._meta.database
    p = db.param
    floors = _floors()
    audiences: Any = BrokerAudience.select(BrokerAudience.id, BrokerAudience.members)
    for audience_id, members in list(audiences.tuples()):
        waiting = [floors[m] for m in members.split("\n") if m in floors]
        if waiting:
            db.execute_sql(
                f"DELETE FROM broker_message WHERE audience = {p} AND id < {p} AND {_UNREFERENCED}",
                (audience_id, min(waiting)),
            )
        else:
            db.execute_sql(f"DELETE FROM broker_message WHERE audience = {p} AND {_UNREFERENCED}", (audience_id,))
    db.execute_sql(f"DELETE FROM broker_message WHERE audience IS NULL AND {_UNREFERENCED}")
    db.execute_sql(
        "DELETE FROM broker_audience WHERE NOT EXISTS"
        " (SELECT 1 FROM broker_message WHERE broker_message.audience = broker_audience.id)"
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
        floors = _floors()
        saved_audiences: Any = BrokerAudience.select(BrokerAudience.id, BrokerAudience.members)
        audiences: dict[int, list[str]] = {
            audience_id: members.split("\n") for audience_id, members in saved_audiences.tuples()
        }
        messages: dict[int, Queued] = {}
        queued: dict[str, list[Queued]] = {}
        query: Any = BrokerMessage.select(
            BrokerMessage.id, BrokerMessage.topic, BrokerMessage.payload, BrokerMessage.qos, BrokerMessage.audience
        ).order_by(BrokerMessage.id)
        for row_id, topic, payload, qos, audience in query.tuples():
            message = messages[row_id] = Queued(row_id, topic, bytes(payload), qos)
            for member in audiences.get(audience, ()) if audience is not None else ():
                if floors.get(member, row_id + 1) <= row_id:
                    queued.setdefault(member, []).append(message)
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
                subscriptions.get(row.client_id, ()), _in_order(queued.get(row.client_id, ())),
                inflight.get(row.client_id, ()), received.get(row.client_id, ()), row.floor,
            )
            for row in BrokerSession.select()
        ]
        rows = RetainedMessage.select(
            RetainedMessage.topic, RetainedMessage.feed, RetainedMessage.payload, RetainedMessage.qos
        )
        retained = [Retained(topic, feed_id, bytes(payload), qos) for topic, feed_id, payload, qos in rows.tuples()]
        last = BrokerMessage.select(pw.fn.MAX(BrokerMessage.id)).scalar() or 0
        floor = BrokerSession.select(pw.fn.MAX(BrokerSession.floor)).scalar() or 0
        last_audience = BrokerAudience.select(pw.fn.MAX(BrokerAudience.id)).scalar() or 0
    return Saved(sessions, retained, max(int(last), int(floor) - 1), int(last_audience))


def _in_order(messages: Sequence[Queued]) -> list[Queued]:
    """A session's queue from its rows and its audiences: by id, each once."""
    return sorted({m.id: m for m in messages}.values(), key=lambda m: m.id)


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
            [
                (s.client_id, s.user_id, s.token_id, s.password_version, s.service, s.disconnected, s.floor)
                for s in chunk
            ],
            fields=[
                BrokerSession.client_id, BrokerSession.user_id, BrokerSession.token_id,
                BrokerSession.password_version, BrokerSession.service, BrokerSession.disconnected,
                BrokerSession.floor,
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
    # Each message once, however many sessions wait for it (one saved before is kept as it is): those
    # queued for offline sessions with their audience, those of sessions saved whole with a row each.
    db = BrokerQueued._meta.database
    p = db.param
    if changes.audiences:
        db.cursor().executemany(
            f"INSERT INTO broker_audience (id, members) VALUES ({p}, {p}) ON CONFLICT DO NOTHING",
            [(audience_id, "\n".join(members)) for audience_id, members in changes.audiences],
        )
    audience_of = {m.id: audience for m, audience in changes.messages}
    messages = {m.id: m for m, _ in changes.messages}
    pending: list[tuple[str, int, int | None, bool]] = []
    for s in changes.sessions:
        for m in s.queued:
            messages[m.id] = m
            pending.append((s.client_id, m.id, None, False))
        for inflight in s.inflight:
            messages[inflight.message.id] = inflight.message
            pending.append((s.client_id, inflight.message.id, inflight.packet_id, inflight.released))
    # The busiest statement (a flood for offline sessions), hand-written: Peewee's insert_many cost more
    # than the database's work.
    if messages:
        db.cursor().executemany(
            f"INSERT INTO broker_message (id, topic, payload, qos, audience) VALUES ({p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT DO NOTHING",
            [(m.id, m.topic, m.payload, m.qos, audience_of.get(m.id)) for m in messages.values()],
        )
    if pending:
        db.cursor().executemany(
            f"INSERT INTO broker_pending (session_id, message_id, packet_id, released) SELECT {p}, {p}, {p}, {p}"
            f" WHERE EXISTS (SELECT 1 FROM broker_session WHERE client_id = {p}) ON CONFLICT DO NOTHING",
            [(client_id, message_id, packet_id, released, client_id) for client_id, message_id, packet_id, released
             in pending],
        )
    if changes.floors:
        floors = [(floor, client_id, floor) for client_id, floor in changes.floors.items()]
        db.cursor().executemany(
            f"UPDATE broker_session SET floor = {p} WHERE client_id = {p} AND floor < {p}", floors
        )
        db.cursor().executemany(
            f"DELETE FROM broker_pending WHERE session_id = {p} AND message_id < {p} AND packet_id IS NULL",
            [(client_id, floor) for client_id, floor in changes.floors.items()],
        )
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
