"""Throttling password guesses: a token bucket per account and per client address.

Shared by the viewer (login form, HTTP Basic, registration) and available to the broker (MQTT
CONNECT): each attempt that would hash a password takes one token from every bucket it names; an
empty bucket refuses with the seconds until it holds one again. Thread-safe: page handlers run in a
thread pool.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

from rtdp.errors import TooManyAttempts

# Buckets remembered at most: beyond, the longest-unused go first (a flood of addresses must not grow
# memory without bound; a forgotten bucket only forgives that key).
MAX_KEYS = 100_000


class Throttle:
    """`attempts` per `window` seconds per key, refilled evenly; a burst of `attempts` is allowed."""

    def __init__(
        self, attempts: int, window: float, *, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        if attempts < 1 or window <= 0:
            raise ValueError("a throttle needs at least 1 attempt per positive window")
        self.attempts = attempts
        self.rate = attempts / window  # tokens per second
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key: (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.attempts), now))
        return min(float(self.attempts), tokens + (now - at) * self.rate)

    def take(self, keys: Iterable[Hashable], what: str = "sign-in attempts") -> None:
        """Spend one attempt from each key's bucket, or raise TooManyAttempts (nothing spent) if any is empty."""
        keys = list(keys)
        with self._lock:
            now = self._clock()
            levels = [self._tokens(key, now) for key in keys]
            short = [1.0 - level for level in levels if level < 1.0]
            if short:
                wait = max(1, math.ceil(max(short) / self.rate))
                raise TooManyAttempts(f"too many {what}: try again in {wait} s", retry_after=wait)
            for key, level in zip(keys, levels, strict=True):
                self._buckets[key] = (level - 1.0, now)
                self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)


def account_key(email: str) -> tuple[str, str]:
    return ("account", email.strip().lower()[:254])


def address_key(address: str | None) -> tuple[str, str]:
    return ("address", address or "")
