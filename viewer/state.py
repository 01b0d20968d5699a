"""What the lifespan opens and the routes use: one object, reached through `request.app.state.viewer`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import peewee as pw
from starlette.requests import HTTPConnection

from rtdp import revision
from rtdp.cache import TTLCache
from rtdp.catalog import Policy
from rtdp.codec import Casts, Sample, encode
from rtdp.errors import Unavailable
from rtdp.handoff import Direct, Expiry, Receipt
from rtdp.permissions import Principal
from rtdp.revision import RevisionWatcher
from rtdp.settings import Settings
from rtdp.throttle import Throttle
from viewer.hub import Hub
from viewer.metrics import Metrics
from viewer.order import InOrder
from viewer.publisher import Publisher

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class ViewerState:
    settings: Settings
    db: pw.Database
    publisher: Publisher
    hub: Hub
    metrics: Metrics
    pool: ThreadPoolExecutor
    # Password hashing (argon2) has its own few threads: a login flood queues there and never holds
    # the database pool that token-authenticated requests need.
    hash_pool: ThreadPoolExecutor
    # `rtdp serve` with its embedded broker: points go to the broker and writer in this process
    # (rtdp.handoff), not through the MQTT client.
    direct: Direct | None = None
    # Stored notices put back in commit order before the hub (several bridges); streams tell it where
    # a feed stood when they subscribed.
    order: InOrder | None = None
    # Verified credentials and feed/permission decisions, reused for `settings.credential_ttl` and
    # `settings.decision_ttl` (the broker uses the same lifetimes); changes made through this viewer
    # clear them at once.
    credentials: TTLCache[Any, Principal] = field(init=False)
    decisions: TTLCache[Any, Any] = field(init=False)
    # Credential checks (viewer.auth) and write decisions (viewer.ingest) under way: requests with the same
    # key arriving meanwhile wait for it (`once`).
    checking: dict[Any, asyncio.Future[Principal]] = field(init=False, default_factory=dict)
    deciding: dict[Any, asyncio.Future[Any]] = field(init=False, default_factory=dict)
    # Bumped when cached decisions are forgotten: a check that began before does not cache its answer.
    generation: int = field(init=False, default=0)
    # Password attempts per account and per address (login form, HTTP Basic); sign-ups per address.
    logins: Throttle = field(init=False)
    signups: Throttle = field(init=False)
    # What writing may create (auto-create, feed quota): rtdp.catalog's rules, with these settings.
    policy: Policy = field(init=False)
    # Drops both caches and has open streams check again when any process changed who may do what.
    rights: RevisionWatcher = field(init=False)
    # `hand_over_now`'s receipts answer 503 after `http_publish_timeout` (the writer's later result finds
    # them resolved and leaves them, bridge.intake).
    expiry: Expiry = field(init=False)

    def __post_init__(self) -> None:
        self.policy = Policy.of(self.settings)
        self.credentials = TTLCache(self.settings.credential_ttl)
        self.decisions = TTLCache(self.settings.decision_ttl)
        self.logins = Throttle(self.settings.login_attempts, self.settings.login_window)
        self.signups = Throttle(self.settings.signups_per_hour, 3600.0)
        self.rights = RevisionWatcher(self._read_revision, self.rights_changed)
        self.expiry = Expiry(self.settings.http_publish_timeout, _not_stored_in_time)

    async def _read_revision(self) -> int:
        return await self.run_db(revision.current)

    def rights_changed(self) -> None:
        """On the event loop: stop trusting cached logins and decisions; open streams check again."""
        self.forget_decisions()
        self.credentials.clear()
        self.checking.clear()
        self.hub.recheck()

    async def run_db(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (synchronous, Peewee) call in the database thread pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(func, *args, **kwargs))

    async def run_hash(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a call that hashes a password in the bounded hashing pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.hash_pool, functools.partial(func, *args, **kwargs))

    async def hand_over(self, topic: str, casts: Casts, samples: Sequence[Sample]) -> None:
        """Points checked and cast for `topic`, returned once the broker has them (over MQTT: its PUBACK), or
        stored (in `rtdp serve`: committed and readable); RtdpError (503 and others) otherwise."""
        if self.direct is None:
            await self.publisher.publish(topic, encode(samples))
            return
        try:
            await self.direct.ingest(topic, encode(samples), casts, samples, self.settings.http_publish_timeout)
        except TimeoutError:
            raise _not_stored_in_time() from None

    def hand_over_now(
        self, topic: str, casts: Casts, samples: Sequence[Sample], done: Callable[[Receipt], None]
    ) -> bool:
        """`hand_over` without waiting, when the points can be handed over at once (`rtdp serve`, room in the
        broker's intake): then `done(receipt)` is called on the loop once they are stored, the receipt's
        result None, or else the error `hand_over` would raise. False, and nothing done, otherwise: then
        `hand_over`."""
        if self.direct is None:
            return False
        receipt = self.direct.offer(topic, encode(samples), casts, samples)
        if receipt is None:
            return False
        self.expiry.watch(receipt)
        receipt.add_done_callback(done)
        return True

    def forget_decisions(self) -> None:
        """After a change made here (feed deleted, made private...), stop trusting cached decisions, and
        those being made: a request after the change must not join (or cache) one read before it."""
        self.decisions.clear()
        self.deciding.clear()
        self.generation += 1


def once(under_way: dict[Any, asyncio.Future[T]], key: object, start: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """`start()`'s result, started only if no call for `key` is under way; otherwise that call's (a cached
    answer that expires would send every open connection to the database at once, each for the same
    answer). Each caller's cancellation stays its own."""
    running = under_way.get(key)
    if running is None:
        running = under_way[key] = asyncio.ensure_future(start())
        running.add_done_callback(functools.partial(_done, under_way, key))
    return asyncio.shield(running)


def _done(under_way: dict[Any, asyncio.Future[T]], key: object, running: asyncio.Future[T]) -> None:
    if under_way.get(key) is running:  # not a newer call, started after the map was cleared
        del under_way[key]


def _not_stored_in_time() -> Unavailable:
    return Unavailable(
        "the points were not stored in time (they may still be: a retry with the same x replaces them);"
        " retry later", retry_after=2,
    )


def viewer_state(conn: HTTPConnection) -> ViewerState:
    state: ViewerState = conn.app.state.viewer
    return state
