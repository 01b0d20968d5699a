"""The viewer's Starlette app, its lifespan (database, MQTT client, thread pool, SSE hub) and its server.

Extending it: `create_app` collects routes and middleware from the lists below; the HTML pages
(`viewer.pages`, optional) contribute `page_routes()` and, if defined, `page_middleware(settings)`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import peewee as pw
import uvicorn
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from rtdp import eventloop
from rtdp.accounts import ServiceAccount
from rtdp.database import open_database
from rtdp.errors import ConfigError
from rtdp.handoff import Direct, NoticeTap
from rtdp.mqtt import Endpoint
from rtdp.notices import StoredEvent
from rtdp.openfiles import allow_open_files
from rtdp.settings import HostPort, Settings
from rtdp.store import points_after_named
from rtdp.throttle import Throttle
from viewer.accesslog import AccessLog
from viewer.alerts_api import alert_routes
from viewer.api import api_routes
from viewer.connection import LeanAnswer, Reply, guarded_protocol
from viewer.dashboards_api import dashboard_routes
from viewer.errors import ErrorPage, exception_handlers
from viewer.groups_api import group_routes
from viewer.headers import SECURITY_HEADERS, with_security_headers
from viewer.health import health_routes
from viewer.hub import Hub
from viewer.ingest import JSON_HEADER, PATHS, Answer, ingest_asgi, ingest_routes, lean_answer, lean_now, lean_path
from viewer.metrics import Metrics
from viewer.openapi import openapi_routes
from viewer.order import InOrder
from viewer.publisher import Publisher
from viewer.sharing_api import sharing_routes
from viewer.state import ViewerState
from viewer.stream import RAW_SEND
from viewer.users_api import user_routes

log = logging.getLogger(__name__)

DB_THREADS = 4
CONNECT_WAIT = 3.0


def _page_parts(settings: Settings) -> tuple[list[BaseRoute], list[Middleware], ErrorPage | None]:
    """Routes, middleware and the HTML error page of `viewer.pages`, when that package is present."""
    try:
        from viewer import pages
    except ModuleNotFoundError as exc:
        if exc.name != "viewer.pages":
            raise
        return [], [], None
    routes: list[BaseRoute] = list(pages.page_routes(settings))
    middleware: list[Middleware] = list(pages.page_middleware(settings))
    return routes, middleware, pages.page_errors(settings)


def _endpoint(settings: Settings, service: ServiceAccount | None) -> tuple[Endpoint, str]:
    # Several viewers may share a broker: each process needs its own client id.
    suffix = secrets.token_hex(4)
    if settings.broker is not None:
        endpoint = Endpoint.of(settings.broker)
        base = service.client_id("viewer") if service else "rtdp-viewer"
    else:
        if service is None:
            service = ServiceAccount.load_or_create(settings.data_dir)
        endpoint = Endpoint.of(settings.mqtt, service.username, service.password)
        base = service.client_id("viewer")
    return endpoint, f"{base}-{suffix}"


def create_app(
    settings: Settings,
    *,
    db: pw.Database | None = None,
    service: ServiceAccount | None = None,
    routes: Sequence[BaseRoute] = (),
    middleware: Sequence[Middleware] = (),
    collectors: Sequence[Collector] = (),
    logins: Throttle | None = None,
    hash_pool: ThreadPoolExecutor | None = None,
    direct: Direct | None = None,
    notices: NoticeTap | None = None,
) -> Starlette:
    """The viewer app. `db`: the process's opened database (`rtdp serve`); without it the lifespan opens
    `settings.database_url` and closes it at the end (`rtdp viewer`). Extra `routes` and `middleware`
    are added after the built-in ones; extra Prometheus `collectors` (the bridge's and broker's in
    `rtdp serve`) are registered on the app's /metrics registry. `logins` (the password throttle) and
    `hash_pool` are shared with the embedded broker in `rtdp serve` (the pool is then not shut down
    here); by default the app has its own. `direct`: the embedded broker's in-process entry (`rtdp serve`),
    which HTTP ingestion then uses instead of the MQTT client (rtdp.handoff). `notices`: the stored
    notices of the writer in this process (`rtdp serve`), which the SSE hub then takes instead of
    subscribing to them over MQTT."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="rtdp-db")
        hashing = hash_pool or ThreadPoolExecutor(max_workers=settings.hash_threads, thread_name_prefix="rtdp-hash")
        try:
            opened = db if db is not None else await loop.run_in_executor(pool, open_database, settings.database_url)
            endpoint, client_id = await loop.run_in_executor(pool, _endpoint, settings, service)
        except BaseException:
            pool.shutdown(wait=False)
            if hash_pool is None:
                hashing.shutdown(wait=False)
            raise
        metrics = Metrics()
        for collector in collectors:
            metrics.registry.register(collector)
        hub = Hub(settings.sse_queue, settings.sse_max_lag, on_drop=metrics.sse_dropped.inc)

        async def missing(feed: str, after: int, limit: int) -> list[StoredEvent]:
            rows = await loop.run_in_executor(pool, points_after_named, feed, after, limit)
            return [StoredEvent(*row) for row in rows]

        in_order = InOrder(hub.dispatch, missing, hub.watched)
        publisher = Publisher(
            endpoint,
            client_id,
            max_pending=settings.http_max_pending,
            timeout=settings.http_publish_timeout,
            on_stored=in_order.dispatch,
            watched=in_order.is_watched,
            on_alert=hub.alert,
            subscribe=notices is None,
            held=hub.held,
        )
        metrics.track_pending(lambda: publisher.pending)
        metrics.sse_clients.set_function(lambda: float(hub.client_count))
        state = ViewerState(settings, opened, publisher, hub, metrics, pool, hashing, direct, in_order)
        if logins is not None:
            state.logins = logins
        app.state.viewer = state
        publisher.start(loop)
        if notices is not None:
            notices.attach(publisher.take_notices)
        state.rights.start()
        # Not fatal: /readyz says 503 and ingestion answers 503 until the broker is there.
        if not await loop.run_in_executor(None, publisher.wait_connected, CONNECT_WAIT):
            log.warning("MQTT broker %s:%s not reachable yet; retrying", endpoint.host, endpoint.port)
        try:
            yield
        finally:
            if notices is not None:
                notices.detach()
            await state.rights.stop()
            hub.close()
            await publisher.stop()
            in_order.close()
            if hash_pool is None:
                hashing.shutdown(wait=True)
            pool.shutdown(wait=True)
            if db is None:
                opened.close()

    page_routes, page_middleware, html_errors = _page_parts(settings)
    all_routes: list[BaseRoute] = [
        *health_routes(), *ingest_routes(), *api_routes(), *sharing_routes(), *group_routes(), *user_routes(),
        *alert_routes(), *dashboard_routes(),
        *openapi_routes(),
        *page_routes, *routes,
    ]
    all_middleware: list[Middleware] = [*page_middleware, *middleware]
    handlers: Any = exception_handlers(html_errors)
    app = ViewerApp(routes=all_routes, middleware=all_middleware, exception_handlers=handlers, lifespan=lifespan)
    app.access_log = AccessLog(settings.access_log)
    return app


class ViewerApp(Starlette):
    """Starlette, except that scripts' ingestion GETs (with an Authorization header) skip the middleware
    and router: viewer.ingest.ingest_asgi answers them itself, with the same checks and answers. Every
    HTTP response gets viewer.headers' security headers."""

    access_log = AccessLog("off")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # An SSE stream writes its body with the server's own send (viewer.stream): headers go on the start.
            scope[RAW_SEND] = send
            send = with_security_headers(send)
        target = lean_path(scope)
        state: ViewerState | None = getattr(self.state, "viewer", None) if target is not None else None
        access = self.access_log
        if target is None or state is None:
            if access.errors and scope["type"] == "http":
                send = access.wrap(scope, send)
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        status = await ingest_asgi(state, scope, target[0], target[1], send)
        if access.errors:
            access.record(scope, status)

    def lean_route(self, scope: Scope, reply: Reply) -> Awaitable[LeanAnswer] | bool:
        """viewer.connection's shortcut for the requests `ingest_asgi` above answers: the same answer,
        with the security headers, written by the connection itself in one piece; through `reply` when
        viewer.ingest.lean_now can answer without waiting."""
        target = lean_path(scope)
        state: ViewerState | None = getattr(self.state, "viewer", None) if target is not None else None
        if target is None or state is None:
            return False
        scope["app"] = self
        if lean_now(state, scope, target[0], target[1], partial(self._reply, scope, reply)):
            return True
        return self._lean(state, scope, target[0], target[1])

    async def _lean(self, state: ViewerState, scope: Scope, feed: str, axis: str) -> LeanAnswer:
        return self._whole(scope, await lean_answer(state, scope, feed, axis))

    def _reply(self, scope: Scope, reply: Reply, answer: Answer) -> None:
        reply(self._whole(scope, answer))

    def _whole(self, scope: Scope, answer: Answer) -> LeanAnswer:
        status, body, headers = answer
        if self.access_log.errors:
            self.access_log.record(scope, status)
        # One list for the common answer: the connection reuses its encoded lines (viewer.connection).
        return status, body, [JSON_HEADER, *headers, *SECURITY_HEADERS] if headers else _LEAN_HEADERS


_LEAN_HEADERS = [JSON_HEADER, *SECURITY_HEADERS]


def close_streams(app: Starlette) -> None:
    """End every SSE stream now (server shutdown): clients reconnect elsewhere with Last-Event-ID."""
    state: ViewerState | None = getattr(app.state, "viewer", None)
    if state is not None:
        state.hub.close()


def bind_socket(address: HostPort, option: str = "--http", *, reuse_port: bool = False) -> socket.socket:
    """A listening-ready socket, or a one-line ConfigError naming the option to change. `reuse_port`: shared
    with the other sockets bound so by this user (the viewer's workers, viewer.workers)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{option}: cannot listen on {address}: {exc.strerror or exc}; choose another with {option} HOST:PORT"
        ) from None
    return sock


class ViewerServer(uvicorn.Server):
    """uvicorn on a socket bound in advance; ends SSE streams first when it shuts down."""

    def __init__(self, config: uvicorn.Config, app: Starlette, sock: socket.socket) -> None:
        super().__init__(config)
        self.viewer_app = app
        self.socket = sock

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets or [self.socket])

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.viewer_app)
        await super().shutdown(sockets)


def build_server(settings: Settings, app: Starlette, **config: Any) -> ViewerServer:
    """A uvicorn server for `app` on settings.http, to `await server.serve()` in a running loop.

    Binds now, so a port in use fails here with ConfigError naming --http. Extra keywords go to
    uvicorn.Config (e.g. log_config=None when the caller configures logging).
    """
    sock = bind_socket(settings.http, reuse_port=settings.workers > 1)
    options: dict[str, Any] = {
        "lifespan": "on",
        "log_level": settings.log_level.lower(),
        "server_header": False,
        # uvicorn's line per request only when asked for all of them; the default mode is viewer.accesslog's.
        "access_log": settings.access_log == "all",
        "timeout_graceful_shutdown": 5,
        "loop": eventloop.resolve(settings.loop),
        # Bounded request heads, header timeout and connection caps (viewer.connection).
        # Scripts' ingestion GETs answered by the connection itself, unless uvicorn logs every request.
        "http": guarded_protocol(
            settings, app.lean_route if isinstance(app, ViewerApp) and settings.access_log != "all" else None, PATHS
        ),
        "timeout_keep_alive": settings.http_keepalive,
    }
    options.update(config)
    return ViewerServer(uvicorn.Config(app, **options), app, sock)


def run(settings: Settings) -> None:
    """`rtdp viewer`: serve until Ctrl-C or SIGTERM (blocking); with --workers N, N processes on one port."""
    if settings.workers > 1:
        from viewer.workers import Workers

        Workers(settings, serve_one).run()
        return
    serve_one(settings)


def serve_one(settings: Settings) -> None:
    """One viewer process: the app on settings.http until Ctrl-C or SIGTERM."""
    allow_open_files(settings.http_max_connections)
    app = create_app(settings)
    server = build_server(settings, app)
    log.info("viewer on http://%s", settings.http)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it captured once it has shut down cleanly: not an error.
        pass
