"""Who may connect to the embedded broker and which topics they may use.

amqtt asks per CONNECT (authenticate) and per topic action (publish, subscribe, and receive: once
per message per subscriber). The answers come from the same users, tokens and `permissions.allowed`
as the web side. Peewee is synchronous and argon2 slow, so database work runs on a small thread
pool owned here and answers are cached for a short time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from functools import lru_cache, partial
from typing import TypeVar

import peewee as pw

from rtdp.accounts import ServiceAccount, check_credentials
from rtdp.cache import TTLCache, credential_key
from rtdp.errors import AuthenticationFailed, InvalidInput
from rtdp.logs import RateLimitedLog
from rtdp.models import Feed
from rtdp.permissions import Access, Principal, allowed
from rtdp.store import ensure_feed
from rtdp.topic import ERRORS_PREFIX, FEEDS_PREFIX, STORED_PREFIX, FeedTopic, feed_of_filter

logger = logging.getLogger(__name__)

T = TypeVar("T")

CREDENTIAL_TTL = 60.0
DECISION_TTL = 5.0
DB_THREADS = 4

_WILDCARDS = ("+", "#")


class TopicAction(StrEnum):
    """The three questions amqtt asks (its `Action` values)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


def feed_wildcard(topic_filter: str) -> bool:
    """True for filters that span feeds (`feeds/#`, `feeds/+/x`, `rtdp/stored/+`, `rtdp/errors/#`):
    they may be subscribed because every message is checked again on receive."""
    parts = topic_filter.split("/")
    if parts[0] == FEEDS_PREFIX and len(parts) >= 2:
        return parts[1] in _WILDCARDS
    if "/".join(parts[:2]) in (STORED_PREFIX, ERRORS_PREFIX) and len(parts) >= 3:
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


class AccessControl:
    """Authentication and topic decisions for one embedded broker.

    Counters (`auth_failures`, `refused_publishes`, `refused_subscribes`, and `messages_in`: PUBLISH
    packets checked, `messages_out`: deliveries permitted) are plain ints for metrics (broker.metrics).
    """

    def __init__(self, service: ServiceAccount, *, auto_create: bool = True) -> None:
        self.service = service
        self.auto_create = auto_create
        self.auth_failures = 0
        self.refused_publishes = 0
        self.refused_subscribes = 0
        self.messages_in = 0
        self.messages_out = 0
        self._principals: dict[str, Principal] = {}
        self._credentials: TTLCache[tuple[str, str], Principal] = TTLCache(CREDENTIAL_TTL)
        self._decisions: TTLCache[tuple[tuple[int, int | None], str, Access], bool] = TTLCache(DECISION_TTL)
        self._executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="rtdp-broker-db")
        self._log = RateLimitedLog(logger)

    async def _in_thread(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(func, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def principal(self, client_id: str | None) -> Principal | None:
        """The principal a connected (or persistent, offline) client authenticated as."""
        return self._principals.get(client_id or "")

    def forget(self, client_id: str | None) -> None:
        self._principals.pop(client_id or "", None)

    async def authenticate(self, client_id: str | None, username: str | None, password: str | None) -> bool:
        """Check CONNECT credentials; on success remember the principal for the client id.

        A failed CONNECT leaves any principal already held for that client id alone, so a wrong
        password sent with someone else's client id does not change what that client may do.
        """
        if self.service.matches(username, password):
            principal = self.service.principal()
        else:
            principal_or_none = await self._check_credentials(username, password)
            if principal_or_none is None:
                self.auth_failures += 1
                return False
            principal = principal_or_none
        self._principals[client_id or ""] = principal
        return True

    async def _check_credentials(self, username: str | None, password: str | None) -> Principal | None:
        if not password:
            self._log.warning("anonymous", "MQTT connection without credentials refused")
            return None
        key = credential_key(username, password)
        cached = self._credentials.get(key)
        if cached is not None:
            return cached
        try:
            principal = await self._in_thread(check_credentials, username, password)
        except AuthenticationFailed as exc:
            self._log.warning("auth", "MQTT login refused for user %r: %s", (username or "")[:80], exc.message)
            return None
        except pw.PeeweeException as exc:
            # A database outage must refuse logins, not crash amqtt's connection handler.
            self._log.warning("auth-db", "MQTT login refused, database error: %s", exc)
            return None
        self._credentials.put(key, principal)
        return principal

    async def permits(self, client_id: str | None, username: str | None, topic: str, action: TopicAction) -> bool:
        """May this client publish to, subscribe to, or receive from `topic`?"""
        principal = self.principal(client_id)
        if action is TopicAction.PUBLISH:
            self.messages_in += 1  # amqtt asks once per incoming PUBLISH and once per delivery (RECEIVE)
        if principal is None:
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
            return cached
        try:
            decision = await self._in_thread(self._decide, principal, feed, access)
        except pw.PeeweeException as exc:
            self._log.warning("acl-db", "topic check refused, database error: %s", exc)
            return False  # not cached: the next message asks again
        self._decisions.put(key, decision)
        return decision

    def _decide(self, principal: Principal, name: str, access: Access) -> bool:
        """Runs in a worker thread (Peewee is synchronous)."""
        feed = Feed.get_or_none(Feed.name == name)
        if feed is None:
            if not (access is Access.WRITE and self.auto_create and self._may_create(principal)):
                return False
            feed = ensure_feed(name, principal.user_id)
            logger.info("feed %r created on first publish by %s", name, principal.email)
        return allowed(principal, feed, access)

    @staticmethod
    def _may_create(principal: Principal) -> bool:
        # A token limited to one feed, or to reading, must not create feeds of its own.
        return principal.token_feed_id is None and principal.token_access is not Access.READ
