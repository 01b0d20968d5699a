"""The bridge service: the MQTT subscription feeding the batching writer, and the process entry point.

Threads (the boundary is the bounded queue):
- paho's network thread (loop_start) reads the socket. Incoming PUBLISH packets are parsed by
  rtdp.wire's PublishReader, not by paho: each read's messages are wrapped and put on the queue in one
  go (`_deliver`); when the queue is full it blocks, so paho stops reading the socket and the broker
  holds the rest (back-pressure; a QoS 1 message is never dropped here). paho's callbacks still handle
  everything else (connect, subscribe, disconnect).
- the writer thread (bridge.batching.BatchLoop, shared with the embedded broker's intake) takes batches
  off the queue, stores them (bridge.writer), then acknowledges them and publishes what was stored and
  what was rejected.

Calling paho from the writer thread: acks (rtdp.wire.send_pubacks, one packet for a batch's PUBACKs)
and `publish()` only append a packet to paho's outgoing deque (a thread-safe append) and wake the
network thread through its socket pair (paho 2.2, `Client._packet_queue`); with loop_start they never
write to the socket themselves. publish() takes paho's `_out_message_mutex`. So both are safe to call
from the writer thread, and neither blocks, which matters: the network thread may be blocked in
`_deliver` waiting for the writer to free queue space.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType

import paho.mqtt.client as mqtt
import peewee as pw
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.batching import BatchLoop, Inbox
from bridge.errors import BridgeError
from bridge.retention import RetentionScheduler
from bridge.stats import Stats
from bridge.writer import Incoming, Notice, Writer
from rtdp.accounts import ServiceAccount
from rtdp.database import open_database
from rtdp.logs import RateLimitedLog, configure_logging
from rtdp.mqtt import Endpoint, make_client
from rtdp.settings import Settings
from rtdp.wire import Publish, read_publishes, send_pubacks

log = logging.getLogger("rtdp.bridge")

# `feeds/#` rather than `feeds/+/+`: a topic of the wrong depth must reach the bridge to be reported
# on the errors topic instead of vanishing unseen.
FEEDS_FILTER = "feeds/#"
# Our own QoS 1 publishes (stored/errors notices) waiting in paho: well below the 65,535 message ids.
MAX_OUTGOING = 10_000
NOTICE_QOS = 1
KEEPALIVE = 30
PUT_POLL = 0.5
DISCONNECT_WAIT = 5.0


def subscription_filter(share_group: str | None) -> str:
    return f"$share/{share_group}/{FEEDS_FILTER}" if share_group else FEEDS_FILTER


class Bridge:
    """Subscribes to `feeds/#` (or `$share/<group>/feeds/#`) with a persistent session and stores points.

    `start()` connects in the background (reconnecting with back-off for as long as it runs);
    `stop()` drains: the batch in hand and what is queued (up to one batch) are committed and
    acknowledged before disconnecting. Anything not acknowledged is redelivered by the broker later.
    """

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        client_id: str,
        db: pw.Database,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.client_id = client_id
        self.stats = Stats()
        self.subscription = subscription_filter(settings.share_group)
        self.ready = threading.Event()  # set while connected and subscribed
        self._disconnected = threading.Event()
        self._last_notice: mqtt.MQTTMessageInfo | None = None
        self._writer = Writer(db, settings, self.stats)
        self._queue = Inbox(maxsize=settings.max_inflight)
        self._batches = BatchLoop(settings, self._writer, self._queue, ack=self._ack, publish=self._publish)
        self.failed = self._batches.failed  # set if the writer thread died of an unexpected error
        self._closed = threading.Event()
        self._generation = 0
        self._started = False
        self._ratelog = RateLimitedLog(log)
        self._client = make_client(
            endpoint, client_id, clean_session=False, manual_ack=True, max_inflight=min(settings.max_inflight, 1000)
        )
        # One 64 KiB recv() serves many packets, parsed without paho's per-message work: paho's three
        # recv() and a select() per packet, and its MQTTMessage and topic matching, made its network
        # thread the bridge's limit at one point per message.
        read_publishes(self._client, self._deliver)
        self._client.max_queued_messages_set(MAX_OUTGOING)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and start the writer thread."""
        if self._started:
            raise BridgeError("bridge already started")
        self._started = True
        self._batches.start()
        try:
            self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=KEEPALIVE)
        except (OSError, ValueError) as exc:
            where = f"{self.endpoint.host}:{self.endpoint.port}"
            raise BridgeError(f"cannot connect to the broker at {where}: {exc}") from None
        # loop_start retries the first connection too, with reconnect_delay_set's back-off.
        self._client.loop_start()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain and disconnect. If the database stays unavailable for `timeout` seconds, give up on the
        batch in hand (it is not acknowledged, so the broker redelivers it to the next session)."""
        self._batches.stop(timeout)
        self._closed.set()
        last = self._last_notice
        if last is not None:
            # paho closes the socket right after writing DISCONNECT; with the broker still sending to us
            # that close becomes a TCP reset, which can make the broker discard what it had not read yet:
            # our last acks and notices. The PUBACK of our last notice proves it read everything before.
            try:
                last.wait_for_publish(DISCONNECT_WAIT)
            except (RuntimeError, ValueError):
                pass
        self._disconnected.clear()
        if self._client.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            # disconnect() only queues the packet: stopping the loop now would drop the last acks and
            # notices still queued ahead of it. paho calls on_disconnect once DISCONNECT is written.
            self._disconnected.wait(DISCONNECT_WAIT)
        self._client.loop_stop()
        self.ready.clear()

    # -- paho's network thread -------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._ratelog.log(logging.ERROR, "connect", "bridge: broker refused the connection: %s", reason_code)
            return
        self._generation += 1
        self.stats.connects += 1
        # Always resubscribe, even with session_present: amqtt can lose a session's subscriptions
        # (a CONNECT reusing our client id with a wrong password wipes them without disconnecting us).
        result, _ = client.subscribe(self.subscription, qos=1)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("bridge: subscribe failed: %s", mqtt.error_string(result))
        log.info("bridge: connected to %s:%d as %s", self.endpoint.host, self.endpoint.port, self.client_id)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("bridge: the broker refused the subscription to %s", self.subscription)
            return
        self.ready.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.ready.clear()
        self._disconnected.set()
        if not self._closed.is_set():
            self._ratelog.log(logging.WARNING, "disconnect", "bridge: lost the broker (%s); reconnecting", reason_code)

    def _deliver(self, publishes: list[Publish]) -> None:
        now = time.time()
        generation = self._generation
        try:
            items = [Incoming(p.topic.decode(), p.payload, p.mid, p.qos, p.retain, now, generation) for p in publishes]
        except UnicodeDecodeError:  # the writer rejects such a topic, naming it as best it can
            items = [
                Incoming(p.topic.decode(errors="replace"), p.payload, p.mid, p.qos, p.retain, now, generation)
                for p in publishes
            ]
        self.stats.received += len(items)
        # Not acknowledged if stopped while waiting for room: the broker redelivers to our next session.
        self._queue.put_many(items, self._closed, PUT_POLL)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # Only what rtdp.wire leaves to paho: a QoS 2 publish (our subscription asks for QoS 1), or every
        # message on a paho whose packet reader could not be replaced.
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:
            topic = message._topic
        self._deliver([Publish(topic, bytes(message.payload), message.mid, message.qos, bool(message.retain))])

    # -- the writer thread (bridge.batching) --------------------------------------------------------

    def _ack(self, batch: Sequence[Incoming]) -> None:
        generation = self._generation
        # A message id belongs to the connection that delivered it; after a reconnect the broker
        # redelivers that message anyway (the (axis, x) upsert makes the second copy harmless).
        mids = [item.mid for item in batch if item.qos == 1 and item.generation == generation]
        send_pubacks(self._client, mids)

    def _publish(self, notice: Notice) -> None:
        info = self._client.publish(notice.topic, notice.payload, qos=NOTICE_QOS)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._last_notice = info
        # NO_CONN with QoS 1 means queued for the next connection; QUEUE_SIZE means dropped.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.stats.publish_dropped += 1
            self._ratelog.log(
                logging.WARNING, "publish", "bridge: notice on %s not sent: %s",
                notice.topic, mqtt.error_string(info.rc),
            )


def default_client_id(settings: Settings) -> str:
    """A stable client id for an external broker: the persistent session must be found again after a
    restart. Two bridges on one host in the same share group need distinct `client_id` settings."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
    return f"rtdp-bridge-{settings.share_group or 'main'}-{host}"


def connection_for(settings: Settings) -> tuple[Endpoint, str]:
    """Where the bridge connects and with which client id."""
    if settings.broker is not None:
        return Endpoint.of(settings.broker), settings.client_id or default_client_id(settings)
    account = ServiceAccount.load_or_create(settings.data_dir)
    endpoint = Endpoint.of(settings.mqtt, account.username, account.password)
    return endpoint, settings.client_id or account.client_id("bridge")


def run(settings: Settings) -> None:
    """`rtdp bridge`: store points until SIGINT or SIGTERM, then drain and exit."""
    configure_logging(settings.log_level)
    db = open_database(settings.database_url, synchronous=settings.sqlite_synchronous)
    endpoint, client_id = connection_for(settings)
    bridge = Bridge(settings, endpoint, client_id, db)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    metrics_server = None
    if settings.metrics is not None:
        from bridge.metrics import bridge_collector
        from rtdp.prometheus import serve_metrics

        metrics_server = serve_metrics(settings.metrics, bridge_collector(bridge))[0]
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    retention = RetentionScheduler(settings, db)
    try:
        bridge.start()
        retention.start()
        log.info("bridge: subscribing to %s at %s:%d", bridge.subscription, endpoint.host, endpoint.port)
        while not stop.wait(1.0) and not bridge.failed.is_set():
            pass
        log.info("bridge: stopping (draining the current batch)")
    finally:
        retention.stop()
        bridge.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.close()
    log.info("bridge: stopped; %s", bridge.stats.as_dict())
    if bridge.failed.is_set():
        raise BridgeError("the bridge's writer failed (see the log); unacknowledged messages will be redelivered")
