"""The embedded MQTT broker: amqtt with rtdp's authentication and topic ACL, started and stopped
as one object, and `run(settings)` behind `rtdp broker`."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from types import TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError as AmqttBrokerError
from amqtt.session import Session

from broker.access import AccessControl
from broker.errors import BrokerError, PortInUse
from rtdp.accounts import ServiceAccount
from rtdp.settings import HostPort, Settings

logger = logging.getLogger(__name__)


def broker_config(listen: HostPort, access: AccessControl) -> dict[str, Any]:
    """amqtt's config: one TCP listener, our two plugins instead of amqtt's defaults (anonymous
    login, $SYS topics, packet logging)."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{listen.host}:{listen.port}", "max_connections": 0}},
        "plugins": {
            "broker.plugins.AuthPlugin": {"access": access},
            "broker.plugins.TopicPlugin": {"access": access},
        },
    }


class _AmqttBroker(Broker):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """amqtt 0.12.1 with its retained-message delivery put behind the topic ACL.

    amqtt sends retained messages on subscribe without asking the RECEIVE check, so a `feeds/#`
    subscriber would get every feed's retained message; and on connect it sends retained messages
    for every filter anyone subscribed to. Here a session gets a retained message only for a
    filter it holds itself and only if it may receive that topic.
    """

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        handler = self._get_handler(session)
        if handler is None or not any(held is session for held, _ in holders):
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                continue
            qos_out = min(qos, retained.qos or qos)
            sending = handler.mqtt_publish(retained.topic, retained.data, qos_out, retain=True)
            tasks.append(asyncio.ensure_future(sending))
        if tasks:
            await asyncio.wait(tasks)


class EmbeddedBroker:
    """amqtt on `listen` (default `settings.mqtt`), guarded by rtdp's users and permissions.

    `await start()` inside a running event loop (amqtt needs one), then `address` is the bound
    address (port 0 picks a free port). `access` holds the counters. Use as `async with`.
    """

    def __init__(self, settings: Settings, service: ServiceAccount, *, listen: HostPort | None = None) -> None:
        self.settings = settings
        self.service = service
        self.listen = listen or settings.mqtt
        self.access = AccessControl(service, auto_create=settings.auto_create)
        self._broker: _AmqttBroker | None = None
        self._port: int | None = None

    @property
    def address(self) -> HostPort:
        if self._port is None:
            raise BrokerError("the embedded broker is not running")
        return HostPort(self.listen.host, self._port)

    async def start(self) -> None:
        self._broker = _AmqttBroker(broker_config(self.listen, self.access))
        try:
            await self._broker.start()
        except AmqttBrokerError as exc:
            self.access.close()
            self._broker = None
            raise self._start_error(exc) from None
        server = self._broker._servers["default"].instance
        sockets = getattr(server, "sockets", None) or ()
        self._port = int(sockets[0].getsockname()[1]) if sockets else self.listen.port

    def _start_error(self, exc: AmqttBrokerError) -> BrokerError:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return PortInUse(
                f"MQTT address {self.listen} is already in use: choose another with --mqtt HOST:PORT",
                address=str(self.listen),
            )
        if isinstance(cause, OSError):
            return BrokerError(f"cannot listen on MQTT address {self.listen} ({cause.strerror}): check --mqtt")
        return BrokerError(f"the embedded MQTT broker failed to start: {exc}")

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        self._port = None
        if broker is not None:
            try:
                await broker.shutdown()
            finally:
                self.access.close()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class _HideStartupTraceback(logging.Filter):
    # amqtt logs a full traceback when a listener cannot bind; we raise a one-line error instead.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Broker startup failed")


def quiet_amqtt_logging() -> None:
    """Keep amqtt's per-connection INFO lines and its bind traceback out of the console."""
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("amqtt.broker").addFilter(_HideStartupTraceback())
    logging.getLogger("transitions").setLevel(logging.WARNING)


async def serve(settings: Settings, service: ServiceAccount, stop: asyncio.Event | None = None) -> None:
    """Run the embedded broker until `stop` is set, or until SIGINT or SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with EmbeddedBroker(settings, service) as broker:
            print(f"MQTT broker listening on mqtt://{broker.address}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(settings: Settings) -> None:
    """`rtdp broker`: the embedded broker alone, on uvloop, until Ctrl-C or SIGTERM.

    Raises PortInUse (a BrokerError) with a one-line message when the MQTT address is taken.
    """
    import uvloop

    from rtdp.database import open_database

    quiet_amqtt_logging()
    db = open_database(settings.database_url)
    try:
        service = ServiceAccount.load_or_create(settings.data_dir)
        uvloop.run(serve(settings, service))
    finally:
        db.close()
