"""A small TTL cache: credential and permission checks run per message or per request, and argon2 or a
database round trip each time would cap ingestion. Entries live `ttl` seconds, so a revoked token or
a removed share stops working within that time. The lifetimes are settings, the same for the viewer
and the broker: `Settings.credential_ttl` and `Settings.decision_ttl`."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.changes = 0  # puts and clears so far: what a cache built from this one's answers checks

    def entry(self, key: K) -> tuple[float, V] | None:
        """(when it expires, time.monotonic(); the value) as stored, expired or not."""
        return self._data.get(key)

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V) -> None:
        self.changes += 1
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self.changes += 1
        self._data.clear()


def credential_key(username: str | None, password: str | None) -> tuple[str, str]:
    """A cache key that does not keep the password itself in memory."""
    digest = hashlib.sha256((password or "").encode("utf-8", "surrogateescape")).hexdigest()
    return (username or "", digest)
