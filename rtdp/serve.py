"""`rtdp serve`: broker, bridge, viewer (and optionally the emulator) in one process.

Part of the CLI layer, the one place allowed to compose the four packages. One event loop (uvloop unless
`--loop asyncio`) runs the embedded amqtt broker and uvicorn. With the embedded broker the bridge takes
messages in through a hook inside the broker (bridge.intake: the same writer thread, Writer and codec as
`rtdp bridge`, without amqtt's QoS 1 delivery to a client) and sends its notices through the broker;
with an external broker (`--broker`) it subscribes over MQTT as `rtdp bridge` does. With the embedded
broker, HTTP points and stored notices pass between the viewer and the writer inside the process
(rtdp.handoff); otherwise the viewer, and in every mode the emulator, talk to the broker over loopback
MQTT. The database is opened here, once, and
handed to each part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import peewee as pw

from rtdp.accounts import ServiceAccount
from rtdp.database import open_database
from rtdp.demo import DEMO_PASSWORD, seed_demo
from rtdp.errors import ConfigError, RtdpError
from rtdp.handoff import NoticeTap
from rtdp.logs import configure_logging
from rtdp.models import User
from rtdp.openfiles import allow_open_files
from rtdp.settings import HostPort, Settings
from rtdp.throttle import Throttle

if TYPE_CHECKING:
    from bridge.intake import Intake
    from broker.server import EmbeddedBroker

log = logging.getLogger("rtdp.serve")

# Seconds between checks that the bridge's writer thread is still alive.
FAILURE_POLL = 1.0


def serve(settings: Settings) -> None:
    """Run everything until Ctrl-C or SIGTERM. Raises RtdpError (one-line message) on a bad setting."""
    from rtdp import eventloop

    configure_logging(settings.log_level)
    allow_open_files(
        settings.http_max_connections + (settings.mqtt_max_connections if settings.embedded_broker else 0)
    )
    db = open_database(settings.database_url, synchronous=settings.sqlite_synchronous)
    try:
        if settings.demo and seed_demo():
            print(
                f"demo data created: users ep@nothing.com and ap@nothing.com, password {DEMO_PASSWORD!r}"
                " - WARNING: change these passwords (or do not use --demo) on a reachable server",
                file=sys.stderr,
                flush=True,
            )
        service = ServiceAccount.load_or_create(settings.data_dir)
        # One pool of password-hashing threads for the web and MQTT logins: a flood over both hashes on
        # --hash-threads threads, not twice as many (each argon2 check holds 64 MB while it runs).
        hashing = ThreadPoolExecutor(max_workers=settings.hash_threads, thread_name_prefix="rtdp-hash")
        try:
            eventloop.run(_serve(settings, service, db, hashing), settings.loop)
        finally:
            hashing.shutdown(wait=False, cancel_futures=True)
    finally:
        db.close()


def emulator_owner() -> str:
    """Who owns emulated feeds unless told: the first admin (ep@nothing.com with --demo)."""
    owner = User.select().where(User.is_admin == True).order_by(User.id).first()  # noqa: E712
    if owner is None:
        raise ConfigError("--emulate: the emulated feeds need an owner: create an admin user first (or use --demo)")
    return str(owner.email)


def _demo_dashboard(owner_email: str) -> None:
    """`--demo --emulate`: a dashboard over the emulated devices (once; the emulator made their feeds)."""
    from rtdp.dashboards import seed_demo_dashboard
    from rtdp.emulation import source_feeds

    made = seed_demo_dashboard(User.get(User.email == owner_email), {k: v for k, v in source_feeds().items() if v})
    if made is not None:
        print(f"demo dashboard created: /dashboards/{made.id} (signed in as {owner_email})", flush=True)


@contextlib.contextmanager
def _no_uvicorn_signals() -> Iterator[None]:
    # uvicorn re-raises SIGINT/SIGTERM after serve() returns; we own the signals so shutdown is ordered.
    yield


async def _serve(settings: Settings, service: ServiceAccount, db: pw.Database, hashing: ThreadPoolExecutor) -> None:
    from bridge.intake import Intake
    from bridge.service import Bridge, default_client_id
    from broker.server import EmbeddedBroker, quiet_amqtt_logging
    from rtdp.mqtt import Endpoint
    from viewer.app import bind_socket, build_server, create_app

    loop = asyncio.get_running_loop()
    # Check the web port before starting anything, so both "port in use" errors come first.
    bind_socket(settings.http).close()

    # One password throttle per account and address, whether the guesses come over HTTP or MQTT.
    logins = Throttle(settings.login_attempts, settings.login_window)
    broker: EmbeddedBroker | None = None
    intake: Intake | None = None
    notices: NoticeTap | None = None
    bridge: Bridge | None = None
    if settings.embedded_broker:
        quiet_amqtt_logging()
        intake = Intake(settings, db)
        broker = EmbeddedBroker(settings, service, intake=intake, logins=logins, hash_pool=hashing)
        await broker.start()
        # Stored notices go to the broker's subscribers and, in the process, to the viewer's SSE hub.
        notices = NoticeTap()
        embedded = broker

        def notify(topic: str, payload: bytes) -> None:
            embedded.publish(topic, payload)
            notices.post(topic, payload)

        intake.start(notify)
        address = broker.address
        # With --mqtt HOST:0 the broker picked a port: everyone must connect to that one.
        settings = settings.replace(mqtt=HostPort(address.host, address.port))
        mqtt_address = f"mqtt://{address}"
    else:
        assert settings.broker is not None
        endpoint = Endpoint.of(settings.broker)
        client_id = settings.client_id or default_client_id(settings)
        bridge = Bridge(settings, endpoint, client_id, db)
        mqtt_address = str(settings.broker)

    from bridge.metrics import bridge_collector
    from broker.metrics import BrokerCollector

    # The bridge's writer: the in-broker intake in embedded mode, a subscribing Bridge otherwise.
    writer: Intake | Bridge | None = intake if intake is not None else bridge
    assert writer is not None
    # One process: the viewer's /metrics also shows the bridge's (or intake's) and the broker's numbers.
    collectors: list[Any] = [bridge_collector(writer)]
    if broker is not None:
        collectors.append(BrokerCollector(broker))
    try:
        # With the embedded broker, HTTP points go to it and the intake directly (rtdp.handoff): a 200 then
        # means committed, and no loopback MQTT round trip per point.
        app = create_app(
            settings, db=db, service=service, collectors=collectors, logins=logins, hash_pool=hashing, direct=broker,
            notices=notices,
        )
        server = build_server(settings, app, log_config=None)
    except BaseException:
        await _stop_broker(broker, intake)
        raise
    server.capture_signals = _no_uvicorn_signals  # type: ignore[method-assign]

    from bridge.retention import RetentionScheduler

    retention = RetentionScheduler(settings, db)
    writer_failed = writer.failed
    emulator = None
    try:
        if bridge is not None:
            bridge.start()
        retention.start()
        if settings.emulate:
            from emulator.runner import Emulator

            owner = await asyncio.to_thread(emulator_owner)
            emulator = Emulator(settings, db, owner_email=owner, sources=())
            await asyncio.to_thread(emulator.start)
            if settings.demo:
                await asyncio.to_thread(_demo_dashboard, owner)

        def stop() -> None:
            server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)

        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.05)
            if server.started:
                print(f"rtdp is running: web http://{_web_host(settings.http)}:{server.port}", flush=True)
                print(f"                 mqtt {mqtt_address} (publish to feeds/<feed>/<axis>)", flush=True)
                if broker is not None and broker.ws_address is not None:
                    print(f"                 mqtt over websockets ws://{broker.ws_address}", flush=True)
                print("Press Ctrl-C to stop.", flush=True)

        announcer = asyncio.create_task(announce())
        watcher = asyncio.create_task(stop_on_failure(writer_failed, server))
        await server.serve()
        announcer.cancel()
        watcher.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
        await asyncio.to_thread(retention.stop)
        if bridge is not None:
            await asyncio.to_thread(bridge.stop)
        await _stop_broker(broker, intake)
    print("rtdp stopped.", flush=True)
    if writer_failed.is_set():
        raise RtdpError("the bridge's writer failed (see the log above); points it had not stored may be lost")


async def stop_on_failure(failed: threading.Event, server: Any) -> None:
    """Stop serving once the bridge's writer thread died (a bug: bad data and database outages are handled).
    Serving on would hold every publisher: nothing would be committed and so nothing acknowledged.
    `rtdp bridge` exits in the same case."""
    while not failed.is_set():
        await asyncio.sleep(FAILURE_POLL)
    log.error("the bridge's writer thread failed: stopping")
    server.should_exit = True


async def _stop_broker(broker: EmbeddedBroker | None, intake: Intake | None) -> None:
    # The broker first: once it stopped handing messages over, the intake stores all it holds (their
    # publishers, disconnected before the acks, send them again; the (axis, x) upsert absorbs a second
    # copy). Its last notices find no broker: nobody listens.
    try:
        if broker is not None:
            await broker.stop()
    finally:
        if intake is not None:
            await asyncio.to_thread(intake.stop)


def _web_host(address: HostPort) -> str:
    if address.host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{address.host}]" if ":" in address.host else address.host
