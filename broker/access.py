"""Who may connect to the embedded broker and which topics they may use.

amqtt asks per CONNECT (authenticate) and per topic action (publish, subscribe, and receive: once
per message per subscriber). The answers come from the same users, tokens and `permissions.allowed`
as the web side. Peewee is synchronous and argon2 slow, so database work runs on a small thread
pool owned here, password checks on a bounded pool of their own (a CONNECT flood queues there, never
in front of topic decisions), and answers are cached for a short time. Password guesses are throttled
per account and per client address (`rtdp.throttle`, the web login's rule); the broker answers a
throttled CONNECT with a delayed CONNACK 5.

A connection keeps the principal it authenticated as, but only for `credential_ttl` seconds at a time:
after that its token and user are read again before the next decision, so a revoked token or a
disabled user loses an open connection (and a persistent session) within that time; the client is
then disconnected (`on_revoked`). A change recorded in the rights revision (`rtdp.revision`: a token
revoked, a password changed, a user disabled, by any process) has every held login read again at once,
and those that lost their rights are disconnected within the revision's poll period.

A publish to a feed that does not exist is allowed when the publisher may create feeds (rtdp.catalog's
rule), and nothing is created here: the bridge's writer creates the feed, owned by the publisher
(`creator()`), only once a payload for it decoded, and refuses it beyond the owner's feed quota.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import lru_cache, partial
from typing import TypeVar

import peewee as pw

from rtdp import catalog, revision
from rtdp.accounts import ServiceAccount, check_password, check_token, refresh_principal
from rtdp.cache import TTLCache, credential_key
from rtdp.credentials import looks_like_token
from rtdp.errors import AuthenticationFailed, InvalidInput, TooManyAttempts
from rtdp.logs import RateLimitedLog
from rtdp.models import Feed
from rtdp.permissions import Access, Principal, allowed
from rtdp.revision import RevisionWatcher
from rtdp.throttle import Throttle, account_key, address_key
from rtdp.topic import FEEDS_PREFIX, NOTICE_KINDS, FeedTopic, feed_of_filter

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_THREADS = 4

_WILDCARDS = ("+", "#")


class TopicAction(StrEnum):
    """The three questions amqtt asks (its `Action` values)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


def feed_wildcard(topic_filter: str) -> bool:
    """True for filters that span feeds (`feeds/#`, `feeds/+/x`, `rtdp/stored/+`, `rtdp/errors/#`,
    `rtdp/alerts/#`): they may be subscribed because every message is checked again on receive."""
    parts = topic_filter.split("/")
    if parts[0] == FEEDS_PREFIX and len(parts) >= 2:
        return parts[1] in _WILDCARDS
    if parts[0] == "rtdp" and len(parts) >= 3 and parts[1] in NOTICE_KINDS:
        return parts[2] in _WILDCARDS
    return False


@lru_cache(maxsize=4096)
def _published_feed(topic: str) -> str | None:
    """The feed a publish topic writes to; None unless it is exactly `feeds/<feed>/<axis>`.
    Memoised: a device publishes to the same few topics all day."""
    try:
        return FeedTopic.parse(topic).feed
    except InvalidInput:
        return None


@lru_cache(maxsize=4096)
def _read_feed(topic: str) -> str | None:
    return feed_of_filter(topic)


def _feed_id(name: str) -> int | None:
    feed = Feed.select(Feed.id).where(Feed.name == name).first()
    return int(feed.id) if feed is not None else None


class Decision(Enum):
    DENY = 0
    ALLOW = 1
    CREATE = 2  # the feed does not exist; the publisher may create it (the writer will)
    MISSING = 3  # the feed does not exist: denied, and not cached (see `_feed_allowed`)


@dataclass(frozen=True, slots=True)
class _Held:
    """A client's principal and when (time.monotonic) its credentials must be read again."""

    principal: Principal
    expires: float


def session_id(client_id: str, principal: Principal) -> str:
    """The id amqtt keeps a client's session under: the client's own id within the namespace of its
    rights (who, and what its token limits it to).

    Sessions of different rights can never meet: another user connecting with a device's client id
    gets a session of its own instead of the device's queued messages, and cannot wipe or squat it;
    a user's password login and their feed-limited device token do not share one either. A client
    never sees the id (MQTT 3.1.1 has no way to tell it)."""
    if principal.service:
        return f"service/{client_id}"
    scope = "" if principal.token_feed_id is None else f"f{principal.token_feed_id}"
    if principal.token_access is not None:
        scope += principal.token_access.value[0]
    return f"u{principal.user_id}{'.' + scope if scope else ''}/{client_id}"


def session_owner(session: str) -> str | None:
    """Whose a session id (`session_id`) is: `u<user id>` for any of that user's rights, None for the
    service account's."""
    if session.startswith("service/"):
        return None
    return session.split("/", 1)[0].split(".", 1)[0]


class Memo:
    """One message's RECEIVE answers per principal, for `permits_now` (2,000 sessions of one user: one
    lookup), and until when all of them hold (time.monotonic()): the earliest expiry of the credentials
    and cached decisions they were read from. broker.fastpath keeps a topic's subscribers that long."""

    __slots__ = ("answers", "now", "until")

    def __init__(self, now: float) -> None:
        self.answers: dict[object, bool] = {}
        self.now = now
        self.until = math.inf


class _Principals(dict[str, "_Held"]):
    """The held principals by client id, counting changes (`AccessControl.generation`)."""

    changes = 0

    def __setitem__(self, key: str, value: _Held) -> None:
        self.changes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.changes += 1
        super().__delitem__(key)

    def pop(self, key: str, *default: _Held | None) -> _Held | None:  # type: ignore[override]
        self.changes += 1
        return super().pop(key, *default)


class AccessControl:
    """Authentication and topic decisions for one embedded broker.

    Counters (`auth_failures`, `refused_publishes`, `refused_subscribes`, and `messages_in`: PUBLISH
    packets checked, `messages_out`: deliveries permitted) are plain ints for metrics (broker.metrics).
    """

    def __init__(
        self,
        service: ServiceAccount,
        *,
        auto_create: bool = True,
        credential_ttl: float = 30.0,
        decision_ttl: float = 5.0,
        throttle: Throttle | None = None,
        hash_threads: int = 2,
        hash_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        """`auto_create`: publishes may go to feeds that do not exist yet (only worth it when the writer
        learns the publisher: the intake of `rtdp serve`). Lifetimes, the password throttle and the
        hashing threads come from the settings; `hash_pool`, if given, is shared (`rtdp serve`: with the
        viewer, so that one flood over both cannot hash on twice the threads, each holding argon2's
        64 MB) and not shut down here."""
        self.service = service
        # Only whether a publish may create its feed is decided here (no quota: the writer counts it).
        self.policy = catalog.Policy(auto_create=auto_create)
        self.credential_ttl = credential_ttl
        self.throttle = throttle
        self.auth_failures = 0
        self.throttled = 0  # CONNECTs refused by the password throttle
        self.refused_publishes = 0
        self.refused_subscribes = 0
        self.messages_in = 0
        self.messages_out = 0
        self.revoked = 0  # connections or sessions whose token or user was revoked while held
        # Called with the client id of a connection whose credentials were revoked (set by the broker).
        self.on_revoked: Callable[[str], None] | None = None
        self._principals = _Principals()
        self._rechecks: dict[str, asyncio.Future[Principal | None]] = {}
        self._checks: set[asyncio.Future[Principal | None]] = set()
        # (principal, time.monotonic() when verified): a login served from here expires with the entry.
        self._credentials: TTLCache[tuple[str, str], tuple[Principal, float]] = TTLCache(credential_ttl)
        self._decisions: TTLCache[tuple[tuple[int, int | None], str, Access], Decision] = TTLCache(decision_ttl)
        self._feed_ids: TTLCache[str, int] = TTLCache(decision_ttl)  # 0: no such feed
        self._executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="rtdp-broker-db")
        self._own_hash_pool = hash_pool is None
        self._hash_pool = hash_pool or ThreadPoolExecutor(max_workers=hash_threads, thread_name_prefix="rtdp-hash")
        self._log = RateLimitedLog(logger)
        # Started by the broker: drops the caches when any process changed who may do what.
        self.rights = RevisionWatcher(self._read_revision, self.rights_changed)

    async def _read_revision(self) -> int:
        return await self._in_thread(revision.current)

    def rights_changed(self) -> None:
        """On the broker's loop: cached decisions and logins are stale, and every held principal is read
        again before its next decision (its user may have been disabled or made admin)."""
        self._decisions.clear()
        self._credentials.clear()
        for key, held in list(self._principals.items()):
            if not held.principal.service:
                self._principals[key] = _Held(held.principal, -math.inf)
                # Read now, not at its next decision: an idle subscriber of a disabled user, or of a revoked
                # token, is disconnected at once (`_recheck` calls `on_revoked`).
                checking = asyncio.ensure_future(self._current(key))
                self._checks.add(checking)  # the loop keeps only weak references to tasks
                checking.add_done_callback(self._checks.discard)

    async def _in_thread(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(func, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_hash_pool:
            self._hash_pool.shutdown(wait=False, cancel_futures=True)

    def principal(self, client_id: str | None) -> Principal | None:
        """The principal a connected (or persistent, offline) client authenticated as, as last checked."""
        held = self._principals.get(client_id or "")
        return held.principal if held is not None else None

    def forget(self, client_id: str | None) -> None:
        self._principals.pop(client_id or "", None)

    async def authenticate(self, client_id: str | None, username: str | None, password: str | None) -> bool:
        """Check CONNECT credentials; on success remember the principal for the client id.

        A failed CONNECT leaves any principal already held for that client id alone, so a wrong
        password sent with someone else's client id does not change what that client may do.
        """
        held = await self.login(username, password)
        if held is None:
            return False
        self.hold(client_id, held)
        return True

    async def login(self, username: str | None, password: str | None, address: str | None = None) -> _Held | None:
        """The principal these credentials stand for (and until when), or None (counted as a failure).

        Raises TooManyAttempts when a password guess for this account or from this `address` is over
        the throttle (tokens are not guessable, and not throttled)."""
        if self.service.matches(username, password):
            return _Held(self.service.principal(), math.inf)  # a secret of this process: never revoked
        checked = await self._check_credentials(username, password, address)
        if checked is None:
            self.auth_failures += 1
            return None
        principal, verified = checked
        return _Held(principal, verified + self.credential_ttl)

    def hold(self, client_id: str | None, held: _Held) -> None:
        self._principals[client_id or ""] = held

    def restore(self, client_id: str, principal: Principal) -> None:
        """Hold a principal saved with a persistent session (`broker.persistence`, after a restart): read
        again from the database before its first decision, so a revoked token or disabled user loses it."""
        self._principals[client_id] = _Held(principal, math.inf if principal.service else -math.inf)

    async def _check_credentials(
        self, username: str | None, password: str | None, address: str | None = None
    ) -> tuple[Principal, float] | None:
        if not password:
            self._log.warning("anonymous", "MQTT connection without credentials refused")
            return None
        key = credential_key(username, password)
        cached = self._credentials.get(key)
        if cached is not None:
            return cached
        verified = time.monotonic()
        try:
            if looks_like_token(password):
                principal = await self._in_thread(check_token, password, address)
            elif not username:
                raise AuthenticationFailed("credentials required")
            else:
                self._take_attempt(username, address)
                hashing = partial(check_password, username, password)
                principal = await asyncio.get_running_loop().run_in_executor(self._hash_pool, hashing)
        except AuthenticationFailed as exc:
            self._log.warning("auth", "MQTT login refused for user %r: %s", (username or "")[:80], exc.message)
            return None
        except pw.PeeweeException as exc:
            # A database outage must refuse logins, not crash amqtt's connection handler.
            self._log.warning("auth-db", "MQTT login refused, database error: %s", exc)
            return None
        self._credentials.put(key, (principal, verified))
        return principal, verified

    def _take_attempt(self, username: str, address: str | None) -> None:
        if self.throttle is None:
            return
        try:
            self.throttle.take([account_key(username), address_key(address)])
        except TooManyAttempts:
            self.throttled += 1
            self._log.warning("throttled", "MQTT login for %r from %s throttled", username[:80], address)
            raise

    async def _current(self, client_id: str | None) -> Principal | None:
        """The client's principal, its credentials read again first if they are older than the lifetime."""
        key = client_id or ""
        held = self._principals.get(key)
        if held is None:
            return None
        if held.expires >= time.monotonic():
            return held.principal
        # One database check per client, however many deliveries ask at once.
        pending = self._rechecks.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._recheck(key, held))
            self._rechecks[key] = pending
            pending.add_done_callback(partial(self._recheck_done, key))
        return await asyncio.shield(pending)

    def _recheck_done(self, key: str, done: asyncio.Future[Principal | None]) -> None:
        if self._rechecks.get(key) is done:
            del self._rechecks[key]

    async def _recheck(self, key: str, held: _Held) -> Principal | None:
        checked = time.monotonic()
        try:
            principal = await self._in_thread(refresh_principal, held.principal)
        except AuthenticationFailed as exc:
            if self._principals.get(key) is held:  # not replaced by a new login meanwhile
                del self._principals[key]
                self.revoked += 1
                # Logins cached with these credentials must be checked again too, or the client would
                # simply reconnect with them.
                self._credentials.clear()
                logger.warning("MQTT client %r loses its rights: %s", key[:80], exc.message)
                if self.on_revoked is not None:
                    self.on_revoked(key)
            return None
        except pw.PeeweeException as exc:
            # Refuse this one action; the next asks again (as a topic decision does during an outage).
            self._log.warning("recheck-db", "MQTT credentials not re-checked, database error: %s", exc)
            return None
        if self._principals.get(key) is held:
            self._principals[key] = _Held(principal, checked + self.credential_ttl)
        return principal

    @property
    def generation(self) -> int:
        """Changes whenever a held principal or a cached decision does: answers of `permits_now` stand
        while it stays the same, until their `Memo.until`."""
        return self._principals.changes + self._decisions.changes

    def permits_now(
        self,
        client_id: str | None,
        topic: str,
        action: TopicAction,
        memo: Memo | None = None,
    ) -> bool | None:
        """What `permits` answers for PUBLISH or RECEIVE when that is known without waiting (credentials
        checked within their lifetime, the decision cached), else None: then ask `permits`, which reads
        the database, counts and logs. Counts and logs nothing itself. `memo` (one per message) keeps the
        answers per principal, and until when they hold (broker.fastpath)."""
        held = self._principals.get(client_id or "")
        if held is None:
            return None
        now = time.monotonic() if memo is None else memo.now
        expires = held.expires
        if expires < now:
            return None
        principal = held.principal
        if principal.service:
            return True
        if memo is not None:
            if expires < memo.until:
                memo.until = expires
            known = memo.answers.get(principal.cache_key)
            if known is not None:
                return known
        if action is TopicAction.PUBLISH:
            feed, access = _published_feed(topic), Access.WRITE
        elif action is TopicAction.RECEIVE:
            feed, access = _read_feed(topic), Access.READ
        else:
            return None
        entry = self._decisions.entry((principal.cache_key, feed, access)) if feed is not None else None
        if entry is None or entry[0] < now:
            return None
        answer = entry[1] is not Decision.DENY
        if memo is not None:
            memo.answers[principal.cache_key] = answer
            if entry[0] < memo.until:
                memo.until = entry[0]
        return answer

    async def permits(self, client_id: str | None, username: str | None, topic: str, action: TopicAction) -> bool:
        """May this client publish to, subscribe to, or receive from `topic`?"""
        if action is TopicAction.PUBLISH:
            self.messages_in += 1  # amqtt asks once per incoming PUBLISH and once per delivery (RECEIVE)
        principal = await self._current(client_id)
        if principal is None:
            if action is TopicAction.PUBLISH:  # its credentials were revoked while it was connected
                self.refused_publishes += 1
            return False
        if principal.service:
            if action is TopicAction.RECEIVE:
                self.messages_out += 1
            return True
        if action is TopicAction.PUBLISH:
            ok = await self._may_publish(principal, topic)
            if not ok:
                self.refused_publishes += 1
                self._log.warning(
                    "publish", "refused publish by %r to %r", (username or "")[:80], topic[:120]
                )
            return ok
        if action is TopicAction.SUBSCRIBE and feed_wildcard(topic):
            return True
        feed = _read_feed(topic)
        ok = feed is not None and await self._feed_allowed(principal, feed, Access.READ)
        if ok and action is TopicAction.RECEIVE:
            self.messages_out += 1
        if not ok and action is TopicAction.SUBSCRIBE:
            self.refused_subscribes += 1
            self._log.warning("subscribe", "refused subscribe by %r to %r", (username or "")[:80], topic[:120])
        return ok

    async def _may_publish(self, principal: Principal, topic: str) -> bool:
        feed = _published_feed(topic)
        return feed is not None and await self._feed_allowed(principal, feed, Access.WRITE)

    async def _feed_allowed(self, principal: Principal, feed: str, access: Access) -> bool:
        key = (principal.cache_key, feed, access)
        cached = self._decisions.get(key)
        if cached is not None:
            return cached is not Decision.DENY
        try:
            decision = await self._in_thread(self._decide, principal, feed, access)
        except pw.PeeweeException as exc:
            self._log.warning("acl-db", "topic check refused, database error: %s", exc)
            return False  # not cached: the next message asks again
        if decision is not Decision.MISSING:
            # A missing feed is not remembered: a publish may create it any moment, and a cached denial
            # (a refused SUBSCRIBE to `rtdp/stored/NEW` before NEW existed) hid its first seconds of
            # messages from the same client's permitted `feeds/#`.
            self._decisions.put(key, decision)
        return decision not in (Decision.DENY, Decision.MISSING)

    @property
    def auto_create(self) -> bool:
        return self.policy.auto_create

    def _decide(self, principal: Principal, name: str, access: Access) -> Decision:
        """Runs in a worker thread (Peewee is synchronous). Creates nothing (see the module docstring)."""
        feed = Feed.get_or_none(Feed.name == name)
        if feed is None:
            if access is Access.WRITE and catalog.may_create(principal, self.policy):
                return Decision.CREATE
            return Decision.MISSING
        return Decision.ALLOW if allowed(principal, feed, access) else Decision.DENY

    async def feed_id(self, name: str, *, fresh: bool = False) -> int | None:
        """The id of the feed called `name` now, None if there is none (or the database failed); read from
        a short cache unless `fresh`. Retained messages are tied to it (`broker.server`)."""
        cached = None if fresh else self._feed_ids.get(name)
        if cached is not None:
            return cached or None
        try:
            found = await self._in_thread(_feed_id, name)
        except pw.PeeweeException as exc:
            self._log.warning("feed-db", "feed lookup failed, database error: %s", exc)
            return None
        self._feed_ids.put(name, found or 0)
        return found

    def creator(self, client_id: str | None, topic: str) -> int | None:
        """For the writer, with a permitted publish: the publisher's user id when the publish may create
        its feed (the writer creates it once the payload decoded, and checks again that this user may
        write to it if someone else made it first); None when the feed existed and the decision stands.
        Called on the broker's loop for every message: dictionary lookups only."""
        held = self._principals.get(client_id or "")
        if held is None or not catalog.may_create(held.principal, self.policy):
            return None
        feed = _published_feed(topic)
        if feed is None:
            return None
        decision = self._decisions.get((held.principal.cache_key, feed, Access.WRITE))
        # Expired decisions count as "may create": the writer checks such messages again.
        return None if decision is Decision.ALLOW else held.principal.user_id
