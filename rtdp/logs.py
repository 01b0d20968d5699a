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
    """Logs at most one line per `key` every `interval` seconds, counting what it suppressed:
    a flood of bad messages must not become a flood of log lines."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (0.0, 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} similar suppressed)"
        self.logger.warning(message, *args)
