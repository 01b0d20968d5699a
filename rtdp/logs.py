"""Logging set-up for every process: one line per event, level from --log-level."""

from __future__ import annotations

import logging
import time


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # amqtt logs every connection and packet problem at INFO/WARNING; keep its noise below ours.
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("transitions").setLevel(logging.WARNING)


class RateLimitedLog:
    """At most one record per key every `interval` seconds; the next one says how many were skipped.
    A device stuck sending garbage must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 10_000) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        skipped = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        if skipped:
            message += " (%d similar messages not logged)"
            args = (*args, skipped)
        self.logger.log(level, message, *args)

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)
