"""One HTTP connection: uvicorn's httptools protocol with the limits it lacks.

httptools (llhttp) has no bound on the request line or headers and uvicorn arms no timer before a
first request, so one client could send an endless header (uvicorn kept every byte) or hold sockets
open without a word. Here, per connection:

- the request line and headers together may hold `http_max_header` bytes: beyond, 414 (still in the
  request line) or 431, and the connection closes a moment later; what the client sends meanwhile is
  read up to `DRAIN` bytes and dropped, then no longer read at all;
- they must arrive within `http_header_timeout` seconds of the connection or of the previous
  response, however slowly the bytes trickle in (keep-alive's timer restarts on every byte);
- at most `http_max_connections` connections in all and `http_connections_per_ip` from one address:
  the next is answered 503 and closed at once, before it can hold a file descriptor for long.

And one shortcut: a request the app's `lean` route takes (scripts' ingestion GETs, viewer.app) is
answered here from the (status, body, headers) it returns, in one write, without the ASGI layers
(uvicorn's proxy-headers middleware, the app's send wrappers, two `send` calls each checking every
header): at 10,000 requests a second those layers cost more than the point's own way to the database.
Its answer may come later, through a `Reply` (viewer.ingest.lean_now: once the point is committed), with
no task. Pipelining and shutdown stay uvicorn's: the request still has its `RequestResponseCycle`.

Such a request's head, when it comes whole in one read, between requests, and plain (viewer.head), is not
even given to httptools: its per-URL and per-header callbacks and uvicorn's scope building were the largest
part of what was left on the event loop. The scope and cycle are uvicorn's; the limits and timers the same.
Anything else - a head split across reads, pipelined behind another, or not plain - is httptools' as before,
and once httptools holds part of a message every byte goes to it, in order.

The header timeout and uvicorn's keep-alive timeout (`http_keepalive`) share one lazy timer per
connection: armed when the connection starts waiting and none is, and on firing re-armed for whatever
is due next, rather than two timers armed and cancelled per request (a visible share of a request's time
in a profile of `rtdp serve` under wrk).

And a way past the ASGI send for SSE: every other request finds its connection's `Wire` in its scope
(`WIRE`), with which viewer.hub writes a live stream's events to the socket itself, as uvicorn's send would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from rtdp.settings import Settings
from viewer.head import plain_get

# Seconds a refused connection is drained before it is closed, and bytes read from it meanwhile: enough
# for a client that sent its whole oversized request to read why before the close (closing with unread
# bytes resets the connection), bounded so that an endless sender cannot keep the event loop reading.
LINGER = 1.0
DRAIN = 256 * 1024

REASONS = {
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _raw_response(status: int, message: str, extra: bytes = b"") -> bytes:
    body = message.encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, REASONS[status], len(body), extra, body)
    )


# The scope key of a request's Wire.
WIRE = "rtdp.wire"


class Wire:
    """A response body written straight to the connection's transport, as uvicorn's send writes it (one HTTP
    chunk per write), for viewer.hub to send one event to a thousand streams without a task or an ASGI
    message each. Only once the response started, and never while the ASGI side writes too (the hub writes
    only while the stream's own task waits)."""

    __slots__ = ("cycle", "transport", "flow")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.flow = cycle.flow

    def ready(self) -> bool:
        """Whether a write goes out now: the response is chunked (so a write is framed the same as send's),
        the client is there and the transport is not paused for a full socket (then the stream's task waits
        for the drain, as send does, and the hub queues)."""
        cycle = self.cycle
        return (
            cycle.chunked_encoding is True
            and not cycle.response_complete
            and not cycle.disconnected
            and not self.flow.write_paused
            and not self.transport.is_closing()
        )

    def write(self, body: bytes, chunk: bytes | None = None) -> None:
        self.transport.write(chunk if chunk is not None else b"%x\r\n%s\r\n" % (len(body), body))


# An answer the protocol writes itself: status, body and headers (content-length is added).
LeanAnswer = tuple[int, bytes, list[tuple[bytes, bytes]]]
# Writes a lean answer on the request's connection; called once, on the loop, now or later.
Reply = Callable[[LeanAnswer], None]
# The app's shortcut: for a request's scope and its `Reply`, False to go through the app, True when the
# app answers through the reply, or an awaitable answer (the connection awaits it in a task).
LeanRoute = Callable[[dict[str, Any], Reply], Awaitable[LeanAnswer] | bool]


def _client_host(connection: object) -> str | None:
    client = getattr(connection, "client", None)
    return client[0] if isinstance(client, tuple) else None


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol bounded as the module says; `limits_from(settings)` makes the configured class."""

    max_header = 16 * 1024
    header_timeout = 10.0
    max_connections = 2048
    connections_per_ip = 512
    lean: LeanRoute | None = None
    # How the heads of the lean route's requests start: those are read by viewer.head when plain enough.
    lean_heads: tuple[bytes, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._line_done = False
        # The idle timeouts (module docstring): since when the connection waits, whether nothing came since.
        self._since = 0.0
        self._quiet = False
        self._watch: asyncio.TimerHandle | None = None
        self._lines: tuple[object, object, bytes] = (None, None, b"")
        self._refused = False
        self._drained = 0
        self._paused = False
        # Whether httptools holds part of a message (then every byte goes to it, in order).
        self._parsing = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        same = sum(1 for c in self.connections if _client_host(c) == host)
        if len(self.connections) > self.max_connections or same > self.connections_per_ip:
            # No parsing, no timers: answer and let go of the socket now.
            self.transport.write(_raw_response(503, "too many connections", b"retry-after: 1\r\n"))
            self.transport.close()
            return
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            # The rest of a refused head: dropped, never kept, and read only up to DRAIN bytes: a client
            # that sends on without end then waits on a full window, costing nothing, until LINGER ends.
            self._drained += len(data)
            if self._drained > DRAIN and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        self._quiet = False
        if data.startswith(self.lean_heads) and self._plain_request(data):
            return
        if self._in_head:
            self._head_bytes += len(data)
            if not self._line_done and b"\n" in data:
                self._line_done = True
        super().data_received(data)
        if self._in_head and not self._refused and self._head_bytes > self.max_header:
            if self._line_done:
                self._refuse(_raw_response(431, "request header fields too large"))
            else:
                self._refuse(_raw_response(414, "request line too long"))

    def _plain_request(self, data: bytes) -> bool:
        """Answer `data` through the lean route when it is one whole plain GET head (viewer.head) and the
        connection is between requests, with the scope and cycle uvicorn would make; False, and nothing done,
        when httptools should read it."""
        cycle = self.cycle
        if (
            self._parsing
            or self.pipeline
            or (cycle is not None and not cycle.response_complete)
            or len(data) > self.max_header
            or self.limit_concurrency is not None
        ):
            return False
        head = plain_get(data)
        if head is None:
            return False
        path = head.path.decode("ascii")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": head.headers,
            "state": self.app_state.copy(),
            "method": "GET",
            "path": self.root_path + path,
            "raw_path": self.root_path.encode("ascii") + head.path,
            "query_string": head.query,
        }
        self.cycle = RequestResponseCycle(
            scope=scope,  # type: ignore[arg-type]  # an HTTPScope is a dict
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=head.keep_alive,
            on_response=self.on_response_complete,
        )
        if self._lean(self.cycle):
            return True
        self.cycle = cycle  # not the lean route's after all: httptools reads it, as any other
        return False

    def on_message_begin(self) -> None:
        self._parsing = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._refused:
            return
        # A head that arrived whole in one read: measured here, from what the parser kept.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if len(self.url) > self.max_header:
            self._refuse(_raw_response(414, "request line too long"))
        elif size > self.max_header:
            self._refuse(_raw_response(431, "request header fields too large"))
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._parsing = False
        if not self._refused:
            super().on_message_complete()
            # What follows is the next request's head, counted from here: httptools parses it (and uvicorn
            # keeps it) while this response runs, which for a stream (SSE) is forever.
            self._count_head()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # `app is self.app`: not uvicorn's 503 app for a connection over its concurrency limit.
        if app is self.app and self._lean(cycle):
            return
        cycle.scope[WIRE] = Wire(cycle)  # type: ignore[literal-required]  # an HTTPScope is a dict
        super()._start_asgi_task(cycle, app)

    def _lean(self, cycle: RequestResponseCycle) -> bool:
        """Whether the lean route took the request (it answers through `_reply`, now or later)."""
        if self.lean is None:
            return False
        taken = self.lean(cycle.scope, partial(self._reply, cycle))  # type: ignore[arg-type]  # a dict
        if taken is False:
            return False
        if taken is not True:
            self._track(self._answer(cycle, taken))
        return True

    def _track(self, answering: Coroutine[Any, Any, None]) -> None:
        # In uvicorn's tasks, as its own request tasks: shutdown waits for them, then cancels them.
        task = self.loop.create_task(answering)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer(self, cycle: RequestResponseCycle, answer: Awaitable[LeanAnswer]) -> None:
        try:
            ready = await answer
        except BaseException:
            # Only cancellation (shutdown) gets here: the route turns errors into answers.
            self.transport.close()
            raise
        self._reply(cycle, ready)

    def _reply(self, cycle: RequestResponseCycle, answer: LeanAnswer) -> None:
        if self.flow.write_paused and not cycle.disconnected:
            # The client reads slower than it sends: the answer waits for it, as uvicorn's `send` would.
            self._track(self._after_drain(cycle, answer))
        else:
            self._write(cycle, answer)

    async def _after_drain(self, cycle: RequestResponseCycle, answer: LeanAnswer) -> None:
        await self.flow.drain()
        self._write(cycle, answer)

    def _write(self, cycle: RequestResponseCycle, answer: LeanAnswer) -> None:
        """Write a lean route's answer as uvicorn's `send` would write a start and a whole body."""
        if cycle.disconnected or self.transport.is_closing():
            return
        status, body, headers = answer
        self.transport.write(b"%s%scontent-length: %d\r\n%s\r\n%s" % (
            STATUS_LINE[status], self._header_lines(cycle.default_headers, headers), len(body),
            b"" if cycle.keep_alive else b"connection: close\r\n", body,
        ))
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _header_lines(self, defaults: list[tuple[bytes, bytes]], headers: list[tuple[bytes, bytes]]) -> bytes:
        # The server's default headers change once a second (the date), and the app's headers for its common
        # answer are one list (viewer.app): the lines written last time are most often the ones to write.
        if self._lines[0] is defaults and self._lines[1] is headers:
            return self._lines[2]
        lines = b"".join(b"%s: %s\r\n" % pair for pair in (*defaults, *headers))
        self._lines = (defaults, headers, lines)
        return lines

    def on_response_complete(self) -> None:
        # uvicorn's, without its keep-alive timer per request: `_wait` arms one lazy timer for both timeouts.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._wait(keep_alive=True)

    def _count_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._line_done = False

    def _start_head(self) -> None:
        self._count_head()
        self._wait(keep_alive=False)

    def _wait(self, keep_alive: bool) -> None:
        """The connection waits from now: for a first request (`keep_alive` False: uvicorn arms no keep-alive
        timeout there) or the next one. One timer per connection checks both timeouts (`_check_idle`): it
        is armed when none is, not per request, and only re-armed when it finds the connection busy again."""
        self._since = self.loop.time()
        self._quiet = keep_alive
        due = self._since + (min(self.timeout_keep_alive, self.header_timeout) if keep_alive else self.header_timeout)
        if self._watch is None or due < self._watch.when():  # (after the first request: keep-alive may be shorter)
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = self.loop.call_at(due, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that stayed quiet `timeout_keep_alive` seconds after a response (uvicorn's
        keep-alive timeout), or whose next head is not whole `header_timeout` seconds after the connection
        or the previous response, however slowly its bytes trickle in."""
        self._watch = None
        if self.transport.is_closing() or self._refused:
            return
        due = []
        if self._quiet:
            due.append(self._since + self.timeout_keep_alive)
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            due.append(self._since + self.header_timeout)
        if not due:
            return  # a request is under way: its response's `_wait` arms the timer again
        if min(due) <= self.loop.time():
            self.transport.close()
        else:
            self._arm(min(due))

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        """Answer a head too large, then drop what the client still sends (up to DRAIN bytes) for a moment
        before closing: closing with unread bytes would reset the connection before the client reads why."""
        self._refused = True
        # Between requests or before the first: nothing else is being written on this connection.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)


def guarded_protocol(
    settings: Settings, lean: LeanRoute | None = None, lean_paths: tuple[str, ...] = ()
) -> type[GuardedHttpProtocol]:
    """The protocol class for uvicorn's `http=` option, with this server's limits and the app's `lean`
    route (see the module docstring), whose GETs under `lean_paths` may skip httptools."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "max_header": settings.http_max_header,
            "header_timeout": settings.http_header_timeout,
            "max_connections": settings.http_max_connections,
            "connections_per_ip": settings.http_connections_per_ip,
            "lean": staticmethod(lean) if lean is not None else None,
            "lean_heads": tuple(b"GET " + path.encode() for path in lean_paths) if lean is not None else (),
        },
    )
