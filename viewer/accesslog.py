"""Which HTTP answers get a log line: `settings.access_log` (`errors` by default, `all` or `off`).

uvicorn's access log writes a line per request at INFO: under an ingestion benchmark that was 1.9 MB of
log in 8 s, a formatted record per point, for answers /metrics already counts by outcome
(`rtdp_http_ingest_total`). So by default only answers of 400 and above are logged, and the same status
for the same kind of request (every ingestion URL is one kind) at most once every 10 s, with how many
were skipped: a device stuck on a revoked token must not become a flood. `all` is uvicorn's own line
for every request, as before; `off` logs none.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from starlette.types import Message, Scope, Send

from rtdp.logs import RateLimitedLog

log = logging.getLogger("rtdp.access")

INGEST_MARK = "/feed_input.json/"


class AccessLog:
    """The `errors` mode's lines; in `all` and `off` modes it records nothing (uvicorn logs, or nobody)."""

    def __init__(self, mode: str) -> None:
        self.errors = mode == "errors"
        self._lines = RateLimitedLog(log)

    def record(self, scope: Scope, status: int) -> None:
        if status < 400:
            return
        method, path = scope["method"], scope["path"]
        kind = "ingestion" if INGEST_MARK in path else f"{method} {path[:200]}"
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        self._lines.log(
            logging.INFO, f"{status} {kind}", '%s - "%s %s HTTP/%s" %d', where, method, path[:200],
            scope.get("http_version", "1.1"), status,
        )

    def wrap(self, scope: Scope, send: Send) -> Send:
        """`send`, recording the status of the answer it starts."""

        # Returns send's own awaitable rather than awaiting it: no coroutine of its own for every message.
        def sending(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                self.record(scope, message["status"])
            return send(message)

        return sending
