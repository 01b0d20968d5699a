"""Persistence: the embedded broker's persistent sessions and retained messages, kept in the database
so that a restart (SIGTERM, or kill -9 for what was committed) loses none of them.

What is saved (`rtdp.store.sessions`): each persistent session (clean session 0) with who it
authenticated as, its subscriptions and the QoS 1/2 messages waiting for it (queued while it was offline,
or sent and not acknowledged when it went), and the retained message of each topic, tied to its feed.

When: the broker records each change here on its loop (a session connected, subscribed, unsubscribed,
disconnected or was removed; a message queued for an offline session or dropped from its full queue; a
retained message set or cleared). A session that changed is saved whole, read from the broker when the
commit is built (its queue, its unacknowledged messages and its client's QoS 2 publishes waiting for
PUBREL then). What is queued while it is offline is appended once, however many sessions it is queued
for (`broker_message`; its id is kept with the message object the fan-out shares between queues), with
its audience: the sessions it was queued for, one `broker_audience` row for all the messages of one
fan-out pattern. Each session has a floor instead of a row per message: a full queue dropping its
oldest raises it. So a flood for 100 offline sessions costs a row per message, not 100 (Mosquitto's
store keeps one message and a reference per client, in memory). Messages nobody waits for any more are
swept every `SWEEP` seconds. Commits run on a thread of their own, one
after the other: the next starts as soon as the last finished and takes everything recorded meanwhile
(group commit), so the event loop never waits for the database and a burst of messages for offline
sessions costs a few commits, not one each.

Acknowledgement: a client's publish that changed the saved state (a copy queued for an offline session,
a retained message) is acknowledged only once that change committed, as well as its point
(`HeldAck`): whatever the broker acknowledged survives kill -9. When no persistent session exists and
the publish is not retained, nothing is held; a publish whose fan-out queued nothing waits for its point
only, not for the commit of other clients' queued copies. broker.fastpath holds the PUBACK of a publish
it queued for an offline persistent session on `barrier()` (asked for after its fan-out), amqtt's way
(a retained one) on `HeldAck`; the
rows of an offline session's queue are kept by its `OfflineQueue` (`rows`), one message object being
shared by many sessions' queues.

Loaded at start (`restore`): sessions offline for longer than the expiry are removed, the rest come
back offline with their subscriptions and queues and their principal, which is read again (a revoked
token or disabled user loses it) before its first decision; retained messages come back only on feeds
that still exist (a deleted feed's rows go with it) and are checked again before each delivery, as
before. A session still connected when the process was killed counts as disconnected at the restart.
Delivery after a crash is at least once: a message sent while connected but saved before may come again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import peewee as pw
from amqtt.broker import RetainedApplicationMessage
from amqtt.mqtt.constants import QOS_2
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.session import OutgoingApplicationMessage, Session

from broker.access import AccessControl
from broker.acks import Received, settle
from broker.fastpath import OfflineQueue, offline_queue
from rtdp.logs import RateLimitedLog
from rtdp.permissions import Principal
from rtdp.store import sessions as saved
from rtdp.store.sessions import Changes, Inflight, Queued, Retained, SavedSession

logger = logging.getLogger(__name__)

# Seconds before a failed commit is tried again (the database is down or locked): nothing is dropped.
RETRY_DELAY = 1.0

# Seconds a change waits for its commit when nobody waits for it (a subscription, a session gone
# offline, a message queued by a notice): the changes of that time share one commit.
LAZY = 0.05
# Seconds a commit somebody waits for (a held acknowledgement) waits for the changes that follow: a
# burst's messages are fanned out one per loop iteration or so, and a commit each cost half the
# throughput with an offline subscriber. It runs beside the intake's commit of the same points.
GATHER = 0.002
# Seconds between sweeps of saved messages nobody waits for any more (delivered, dropped, expired).
SWEEP = 10.0
# Messages remembered with their saved id, so that the sessions sharing one are saved referring to it.
SHARED = 256
# Seconds between commits of the floors raised by full queues dropping their oldest: nobody waits for
# them (after a crash the restored queue is cut to the limit again), and a flood raises every
# subscribed session's floor with each message.
FLOORS = 1.0
# Audiences (client ids) remembered with their saved id, so that a fan-out pattern is saved once.
AUDIENCES = 1024

_SAVE, _REMOVE = True, False


class HeldAck:
    """A client's publish whose acknowledgement waits for its point (`stored`, resolved by the intake) and
    for the commit of what its delivery changed in the saved state. `passed()` is called twice: after its
    fan-out to subscribers and after its hand-over (a retained message recorded); the saved state's commit
    is then asked for, and runs beside the intake's commit of the point."""

    __slots__ = ("_changed", "_message", "_open", "_persistence", "_saved", "stored")

    def __init__(self, message: Any, persistence: Persistence) -> None:
        self._message = message
        self._persistence = persistence
        self._open = 2  # the fan-out, the hand-over
        self._changed = False  # either changed the saved state
        self._saved = False
        self.stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stored.add_done_callback(self._check)

    def passed(self, changed: bool = True) -> None:
        """One step done; `changed`: it recorded something (queued for an offline session, retained)."""
        self._open -= 1
        self._changed = self._changed or changed
        if self._open:
            return
        barrier = self._persistence.barrier() if self._changed else None
        if barrier is None:
            self._committed()
        else:
            barrier.add_done_callback(self._committed)

    def _committed(self, _: object = None) -> None:
        self._saved = True
        self._check()

    def _check(self, _: object = None) -> None:
        if self._saved and self.stored.done():
            settle(self._message)


class Persistence:
    """The saved state of one embedded broker: `restore` at start, record changes while running,
    `close` at a clean stop (saves every persistent session as it is then)."""

    def __init__(self, session_expiry: float | None) -> None:
        self.session_expiry = session_expiry
        self.persistent: set[str] = set()  # ids of the persistent sessions the broker holds
        self.commits = 0  # commits done
        self.failures = 0  # commits that failed (and were tried again)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtdp-broker-state")
        self._sessions: dict[str, bool] = {}  # client id: save whole (_SAVE) or remove (_REMOVE)
        self._changes = Changes()
        self._failed: list[Changes] = []  # a failed commit's changes, saved first by the next one
        self._row = 0  # the last message id given
        self._shared: dict[int, tuple[Any, int]] = {}  # id(message object): it and its saved id
        self._built = 0  # the last message id given before the last commit was built
        self._messages: dict[int, tuple[Queued, list[str]]] = {}  # queued since: each with its audience
        self._audiences: dict[tuple[str, ...], int] = {}  # saved audiences: their ids
        self._audience = 0  # the last audience id given
        self._floors: dict[str, int] = {}  # floors raised since they were last saved
        self._floors_at = 0.0  # when that was (loop time)
        self._swept = 0.0  # when messages nobody waits for were last swept (loop time)
        self._dropped = False  # something since then may have left a message nobody waits for
        self._recorded = 0  # changes recorded ...
        self._committed = 0  # ... and how many of them are committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._running = False
        self._timer: asyncio.Handle | None = None
        self._soon = False  # the timer fires within LAZY seconds
        self._due = 0.0  # when the timer fires (loop time)
        self._closed = False  # nothing more is recorded
        self._stopped = False  # the writer thread is gone
        self._describe: Describe = lambda client_ids: {}
        self._log = RateLimitedLog(logger)

    # -- start ---------------------------------------------------------------------------------------

    async def load(self) -> saved.Saved:
        """Read the saved state (expired sessions removed first), on the writer thread."""
        self._loop = asyncio.get_running_loop()
        now = time.time()
        expired_before = -1.0 if self.session_expiry is None else now - self.session_expiry
        loaded = await self._loop.run_in_executor(self._executor, saved.load, expired_before, now)
        self._row = self._built = loaded.last_queued_id
        self._audience = loaded.last_audience_id
        return loaded

    def restore(self, broker: Any, access: AccessControl, loaded: saved.Saved, queue_limit: int) -> None:
        """Put the saved sessions and retained messages into amqtt's `broker` (started, not listening yet):
        sessions offline with their subscriptions, queues (the newest `queue_limit`) and principals."""
        self._describe = partial(_describe, broker, access, self)
        shared: dict[int, Any] = {}
        for whole in loaded.sessions:
            handler, session = broker.create_offline_session(whole.client_id)
            session.clean_session = False
            session.last_disconnect_time = int(whole.disconnected or time.time())  # expiry counts from it
            broker.sessions[whole.client_id] = (session, handler)
            for topic_filter, qos in whole.subscriptions:
                broker.restore_subscription(session, topic_filter, qos)
            over = max(len(whole.queued) - queue_limit, 0)  # a limit lowered since: the oldest go
            if over:
                self._changes.floors[whole.client_id] = whole.queued[over].id
            queue = offline_queue(session)
            for message in whole.queued[over:]:
                queued = shared.get(message.id)
                if queued is None:  # one object per message, however many queues hold it
                    queued = shared[message.id] = RetainedApplicationMessage(
                        None, message.topic, message.payload, message.qos
                    )
                queue.push(queued, len(whole.queued), message.id)
            restore_inflight(session, whole)
            principal = access.service.principal() if whole.service else principal_of(whole)
            if principal is not None:
                access.restore(whole.client_id, principal)
            self.persistent.add(whole.client_id)
        for retained in loaded.retained:
            broker.retained_messages[retained.topic] = RetainedApplicationMessage(
                None, retained.topic, retained.payload, retained.qos
            )
            if retained.feed_id is not None:
                broker.retained_feeds[retained.topic] = retained.feed_id
        if self._changes.floors:
            self._kick()

    # -- recording (on the broker's loop) -------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether a publish may change the saved state beyond a retained message (a persistent session
        exists that it could be queued for)."""
        return bool(self.persistent)

    def changed(self, session: Session) -> None:
        """A persistent session connected, subscribed, unsubscribed or disconnected: save it whole."""
        client_id = session.client_id
        if self._closed or session.clean_session or not client_id:
            return
        self.persistent.add(client_id)
        self._sessions[client_id] = _SAVE
        self._kick()

    def removed(self, client_id: str | None) -> None:
        """A session ended (expired, or replaced by a clean one): its saved state goes."""
        if self._closed or not client_id or client_id not in self.persistent:
            return
        self.persistent.discard(client_id)
        self._sessions[client_id] = _REMOVE
        self._kick()

    def queued(self, sessions: list[Session], message: Any) -> int:
        """`message` for the offline persistent `sessions`' queues: its saved id (0: not saved), which the
        caller keeps beside it in each session's queue (`OfflineQueue.rows`). A message object shared by
        many queues (broker.fastpath, `_retain_broadcast_message`) is saved once."""
        if self._closed:
            return 0
        members = [s.client_id for s in sessions if not s.clean_session and s.client_id]
        if not members:
            return 0
        known = self._shared.get(id(message))
        if known is not None and known[0] is message and known[1] > self._built:
            row = known[1]
        else:  # a new message, or one whose audience was committed already: saved again for the rest
            row = self.next_row()
            self._messages[row] = (Queued(row, message.topic, bytes(message.data), message.qos or 0), [])
            if len(self._shared) >= SHARED:
                del self._shared[next(iter(self._shared))]  # the oldest: fan-outs share one message at a time
            self._shared[id(message)] = (message, row)
        self._messages[row][1].extend(members)
        self._kick()
        return row

    def trimmed(self, sessions: list[Session]) -> None:
        """The offline `sessions`' full queues dropped their oldest: what is older than each head goes."""
        if self._closed:
            return
        floors, raised = self._floors, False
        for session in sessions:
            rows = getattr(session.retained_messages, "rows", None)  # OfflineQueue's, beside its messages
            row = rows[0] if rows else 0
            if row and session.client_id:
                floors[session.client_id] = row
                raised = True
        if not raised:
            return
        self._dropped = True
        if self._timer is None and not self._running:
            # A timer due or a commit running schedules the floors when it is done (`_commit_next`,
            # `_done`): no clock read per session per message of a flood.
            self._schedule(self._floors_wait())

    def retained(self, topic: str, feed_id: int | None, data: bytes | bytearray, qos: int | None) -> None:
        if not self._closed:
            self._changes.retained[topic] = Retained(topic, feed_id, bytes(data), qos)
            self._kick()

    def cleared(self, topic: str) -> None:
        if not self._closed:
            self._changes.retained[topic] = None
            self._kick()

    def hold(self, message: Any) -> HeldAck:
        return HeldAck(message, self)

    def barrier(self) -> asyncio.Future[None] | None:
        """A future done once everything recorded so far is committed (asked for now); None if it is."""
        if self._committed >= self._recorded:
            return None
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append((self._recorded, waiter))
        self._schedule(GATHER)
        return waiter

    # -- committing ----------------------------------------------------------------------------------

    def _kick(self) -> None:
        self._recorded += 1
        if self._running or self._soon:
            return  # a commit runs, or one is due within LAZY: this change goes with it (no clock read)
        self._schedule(LAZY)

    def _schedule(self, delay: float) -> None:
        """Start a commit in `delay` seconds unless one starts sooner (while one runs, `_done` decides)."""
        loop = self._loop
        if self._running or loop is None:
            return
        due = loop.time() + delay
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.cancel()
        # Our own due time: uvloop's call_later(0) returns a handle without when().
        self._timer, self._due = loop.call_later(delay, self._commit_next), due
        self._soon = delay <= LAZY

    def _build(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        sessions, self._sessions = self._sessions, {}
        described = self._describe([c for c, what in sessions.items() if what is _SAVE]) if sessions else {}
        for client_id in sessions:
            whole = described.get(client_id)
            if whole is None:
                changes.removed.append(client_id)
            else:
                changes.sessions.append(whole)
        messages, self._messages = self._messages, {}
        self._built = self._row
        for message, members in messages.values():
            audience = tuple(dict.fromkeys(members))  # queued twice for one (overlapping filters): once
            audience_id = self._audiences.get(audience)
            if audience_id is None:
                self._audience += 1
                audience_id = self._audience
                changes.audiences.append((audience_id, audience))
                if len(self._audiences) >= AUDIENCES:
                    del self._audiences[next(iter(self._audiences))]
                self._audiences[audience] = audience_id
            changes.messages.append((message, audience_id))
        if sessions:
            # Saved whole (its floor above what it holds) or removed: its drops before now count no more.
            changes.floors = {c: row for c, row in changes.floors.items() if c not in sessions}
            for client_id in sessions:
                self._floors.pop(client_id, None)
            self._dropped = True  # a reconnected session's delivered messages, a removed one's
        assert self._loop is not None
        now = self._loop.time()
        if self._floors and self._floors_wait() == 0:
            changes.floors.update(self._floors)
            self._floors, self._floors_at = {}, now
        if self._dropped and now - self._swept >= SWEEP:
            changes.sweep, self._dropped, self._swept = True, False, now
        return changes

    def next_row(self) -> int:
        """A new queued message id (for a session saved whole)."""
        self._row += 1
        return self._row

    def _commit_next(self) -> None:
        self._timer, self._soon = None, False
        if self._running or self._loop is None or self._stopped:
            return
        if self._committed >= self._recorded and not self._failed:
            if self._floors:
                wait = self._floors_wait()
                if wait > 0:
                    self._schedule(wait)
                    return
            else:
                return
        upto = self._recorded
        batches = [*self._failed, self._build()]
        self._failed = []
        self._running = True
        committing = self._loop.run_in_executor(self._executor, saved.save, batches)
        committing.add_done_callback(partial(self._done, batches, upto))

    def _done(self, batches: list[Changes], upto: int, committing: asyncio.Future[None]) -> None:
        self._running = False
        error = committing.exception() if not committing.cancelled() else None
        if committing.cancelled() or error is not None:
            self.failures += 1
            self._failed = batches
            if error is not None and not isinstance(error, pw.PeeweeException):
                logger.error("broker: saving sessions and retained messages failed", exc_info=error)
            else:
                self._log.warning("save", "broker: saving sessions failed, tried again: %s", error)
            self._schedule(RETRY_DELAY)
            return
        self._committed = upto
        self.commits += 1
        waiters = self._waiters
        while waiters and waiters[0][0] <= upto:
            _, waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
        if self._recorded > self._committed:
            self._schedule(GATHER if self._waiters else LAZY)
        elif self._floors:
            self._schedule(self._floors_wait())

    def _floors_wait(self) -> float:
        """Seconds until the raised floors are due to be saved (0: now)."""
        assert self._loop is not None
        return max(0.0, self._floors_at + FLOORS - self._loop.time())

    # -- stop ----------------------------------------------------------------------------------------

    async def close(self, client_ids: Iterable[str], timeout: float = 10.0) -> None:
        """Save the sessions `client_ids` (every persistent one the broker holds) as they are now, wait
        for the commit, and record nothing more: the broker's shutdown that follows ends every session
        in memory, not in the database."""
        for client_id in client_ids:
            if client_id in self.persistent:
                self._sessions[client_id] = _SAVE
                self._kick()
        barrier = self.barrier()
        self._closed = True
        if barrier is not None:
            try:
                await asyncio.wait_for(asyncio.shield(barrier), timeout)
            except TimeoutError:
                logger.error("broker: sessions and retained messages not saved within %g s (database?)", timeout)
        loop = asyncio.get_running_loop()
        self._stopped = True
        await loop.run_in_executor(self._executor, saved.close_connection)
        self._executor.shutdown(wait=False)


Describe = Callable[[list[str]], dict[str, SavedSession]]


def _describe(
    broker: Any, access: AccessControl, persistence: Persistence, client_ids: list[str]
) -> dict[str, SavedSession]:
    """The persistent sessions `client_ids` whole, as amqtt's `broker` holds them now (those it no longer
    holds are left out: their saved state goes)."""
    wanted = set(client_ids)
    subscriptions: dict[str, list[tuple[str, int]]] = {}
    for topic_filter, holders in broker.subscriptions.items():
        for session, qos in holders:
            if session.client_id in wanted:
                subscriptions.setdefault(session.client_id, []).append((topic_filter, qos))
    described: dict[str, SavedSession] = {}
    for client_id in client_ids:
        entry = broker.sessions.get(client_id)
        if entry is None or entry[0].clean_session:
            continue
        session = entry[0]
        inflight = [
            # Sent and not acknowledged: sent again with the same packet id (DUP), or its PUBREL.
            Inflight(
                Queued(persistence.next_row(), m.topic, bytes(m.data), m.qos or 0),
                packet_id, m.pubrec_packet is not None,
            )
            for packet_id, m in session.inflight_out.items()
        ]
        waiting = session.retained_messages
        known = list(waiting.rows) if isinstance(waiting, OfflineQueue) else []
        rows: list[int] = []
        queued: list[Queued] = []
        for index, message in enumerate(list(waiting._queue)):  # asyncio.Queue's deque, read in place
            row = known[index] if index < len(known) and known[index] else persistence.next_row()
            rows.append(row)
            queued.append(Queued(row, message.topic, bytes(message.data), message.qos or 0))
        if isinstance(waiting, OfflineQueue):
            waiting.rows = deque(rows)  # saved anew: the ids it is saved with now
        received = [packet_id for packet_id, m in session.inflight_in.items() if isinstance(m, Received)]
        floor = persistence.next_row()  # what was queued for it before is in `queued` now, or not for it
        connected = session.transitions.is_connected()
        disconnected = None if connected else float(session.last_disconnect_time or time.time())
        user_id, token_id, version, service = principal_keys(access.principal(client_id))
        described[client_id] = SavedSession(
            client_id, user_id, token_id, version, service, disconnected, subscriptions.get(client_id, ()),
            queued, inflight, received, floor,
        )
    return described


def restore_inflight(session: Session, whole: SavedSession) -> None:
    """Put a saved session's unacknowledged messages back as amqtt keeps them: its messages sent and not
    acknowledged (sent again at the reconnect with DUP=1, or their PUBREL if their PUBREC came) and its
    client's QoS 2 publishes waiting for PUBREL (a resend is not delivered again; the PUBREL gets PUBCOMP)."""
    for sent in whole.inflight:
        message = OutgoingApplicationMessage(
            sent.packet_id, sent.message.topic, sent.message.qos, sent.message.payload, False
        )
        message.publish_packet = message.build_publish_packet()  # sent once: a resend carries DUP=1
        if sent.released:
            message.pubrec_packet = PubrecPacket.build(sent.packet_id)
        session.inflight_out[sent.packet_id] = message
    loop = asyncio.get_running_loop()
    for packet_id in whole.received:
        settled: asyncio.Future[None] = loop.create_future()
        settled.set_result(None)  # stored before it was answered with PUBREC
        session.inflight_in[packet_id] = Received(packet_id, "", QOS_2, b"", False, settled)


def principal_keys(principal: Principal | None) -> tuple[int | None, int | None, int | None, bool]:
    """What is saved of a session's principal: (user id, token id, password version, service)."""
    if principal is None:
        return None, None, None, False
    if principal.service:
        return None, None, None, True
    return principal.user_id, principal.token_id, principal.password_version, False


def principal_of(session: SavedSession) -> Principal | None:
    """The principal a saved session is held under until it is read again (None for the service account:
    the caller holds the process's own). Only the keys `refresh_principal` reads are needed."""
    if session.service or session.user_id is None:
        return None
    return Principal(
        user_id=session.user_id, email="", token_id=session.token_id, password_version=session.password_version
    )
