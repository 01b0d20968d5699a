"""Rate-limited logging: refusals can arrive per message, and a log line each would flood the log."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs at most one line per `key` every `interval` seconds and says how many it held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._state.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._state[key] = (last, held + 1)
            return
        self._state[key] = (now, 0)
        if held:
            self.logger.warning(message + " (%d similar held back)", *args, held)
        else:
            self.logger.warning(message, *args)
