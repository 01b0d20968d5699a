"""What the lifespan opens and the routes use: one object, reached through `request.app.state.viewer`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import peewee as pw
from starlette.requests import HTTPConnection

from rtdp.cache import TTLCache
from rtdp.permissions import Principal
from rtdp.settings import Settings
from viewer.hub import Hub
from viewer.metrics import Metrics
from viewer.publisher import Publisher

P = ParamSpec("P")
T = TypeVar("T")

# Seconds a verified credential or a feed/permission decision is reused: a revoked token, a removed
# share or a deleted feed takes effect within this time (immediately for changes made through this viewer).
CREDENTIAL_TTL = 30.0
DECISION_TTL = 5.0


@dataclass
class ViewerState:
    settings: Settings
    db: pw.Database
    publisher: Publisher
    hub: Hub
    metrics: Metrics
    pool: ThreadPoolExecutor
    credentials: TTLCache[Any, Principal] = field(default_factory=lambda: TTLCache(CREDENTIAL_TTL))
    decisions: TTLCache[Any, Any] = field(default_factory=lambda: TTLCache(DECISION_TTL))

    async def run_db(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (synchronous, Peewee) call in the database thread pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(func, *args, **kwargs))

    def forget_decisions(self) -> None:
        """After a change made here (feed deleted, made private...), stop trusting cached decisions."""
        self.decisions.clear()


def viewer_state(conn: HTTPConnection) -> ViewerState:
    state: ViewerState = conn.app.state.viewer
    return state
