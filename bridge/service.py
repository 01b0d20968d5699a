"""The bridge service: the MQTT subscription feeding the batching writer, and the process entry point.

Threads (the boundaries are the bounded queue and the loop's call_soon_threadsafe):
- the MQTT loop thread (rtdp.mqtt.LoopThread) runs the client: incoming PUBLISH packets are parsed by
  rtdp.mqtt's PublishReader, and each read's messages are wrapped and put on the queue in one go
  (`_deliver`); when the queue is full it blocks, so this loop stops reading the socket and the broker holds
  the rest (back-pressure; a QoS 1 message is never dropped here). The loop is the bridge's own, so the
  block stalls nothing else.
- the writer thread (bridge.batching.BatchLoop, shared with the embedded broker's intake) takes batches
  off the queue, stores them (bridge.writer), then hands the acks (one packet for a batch's PUBACKs) and
  the stored and rejected notices to the MQTT loop, in order, without waiting: the loop may be blocked in
  `_deliver` waiting for the writer to free queue space.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import FrameType

import peewee as pw

from bridge.batching import BatchLoop, Inbox
from bridge.errors import BridgeError
from bridge.retention import RetentionScheduler
from bridge.stats import Stats
from bridge.writer import BatchResult, Incoming, Notice, Writer
from rtdp.accounts import ServiceAccount
from rtdp.alerting import Alerting
from rtdp.database import open_database
from rtdp.logs import RateLimitedLog, configure_logging
from rtdp.mqtt import Client, Endpoint, LoopThread, MqttError, Publish, Subscription
from rtdp.settings import Settings

log = logging.getLogger("rtdp.bridge")

# `feeds/#` rather than `feeds/+/+`: a topic of the wrong depth must reach the bridge to be reported
# on the errors topic instead of vanishing unseen.
FEEDS_FILTER = "feeds/#"
# Our own QoS 1 publishes (stored/errors notices) waiting in paho: well below the 65,535 message ids.
MAX_OUTGOING = 10_000
# Bytes of those notices not yet acknowledged by the broker. A stored notice carries its batch's points
# (~60 kB for 1,000), and paho holds each twice (message and packet) until its PUBACK: when the broker is
# the bottleneck, 1,000 in flight alone were ~120 MB of the bridge. Past this the notice is dropped like one
# paho refuses; viewers read the points it carried from the database when the next notice shows the gap.
MAX_NOTICE_BYTES = 16 * 2**20
NOTICE_QOS = 1
PUT_POLL = 0.5
DISCONNECT_WAIT = 5.0
# Seconds without a message after which a retiring bridge takes its session's queue as drained.
RETIRE_IDLE = 3.0


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
        self.alerting = Alerting(db, settings)
        self._writer = Writer(db, settings, self.stats, alerting=self.alerting)
        self._queue = Inbox(maxsize=settings.max_inflight)
        self._batches = BatchLoop(settings, self._writer, self._queue, ack=self._ack, publish=self._publish)
        self.failed = self._batches.failed  # set if the writer thread died of an unexpected error
        self._closed = threading.Event()
        self._started = False
        self._stopped = False
        self._ratelog = RateLimitedLog(log)
        self._notice_bytes = 0  # MQTT loop thread only
        # QoS 1 messages handed to the writer and not acknowledged yet, per connection (retire()).
        self._unacked: Counter[int] = Counter()
        self._unacked_lock = threading.Lock()
        self._thread = LoopThread("rtdp-bridge-mqtt", settings.loop)
        self._client = Client(
            endpoint,
            client_id,
            clean_session=False,
            max_inflight=min(settings.max_inflight, 1000),
            max_queued=MAX_OUTGOING,
            resend=True,
            subscription=Subscription(self.subscription, self._deliver, qos=1, manual_ack=True),
            name="bridge",
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_subscribe=self._on_subscribe,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and start the writer thread."""
        if self._started:
            raise BridgeError("bridge already started")
        self._started = True
        self._batches.start()
        self._thread.start()
        self._thread.run(self._client.start)
        self.alerting.start(self._publish_message)

    def stop(self, timeout: float = 30.0) -> None:
        """Drain and disconnect. If the database stays unavailable for `timeout` seconds, give up on the
        batch in hand (it is not acknowledged, so the broker redelivers it to the next session)."""
        self._batches.stop(timeout)
        if self._started:
            self.alerting.stop()  # its last messages go out before the client stops
        self._closed.set()
        if self._started and not self._stopped:
            self._stopped = True
            # After the last acks and notices the writer handed over (the loop runs them in order).
            self._thread.run_async(self._client.stop(drain=DISCONNECT_WAIT))
            self._thread.stop()
        self.ready.clear()

    def retire(self, idle: float = RETIRE_IDLE, timeout: float = 3600.0) -> bool:
        """Take over a bridge that is gone for good: connect with its client id, store what the broker
        queued for its session, then remove the session, so that the share group's messages go to the
        bridges that remain. (A persistent session of a share group keeps receiving its share while its
        client is away: Mosquitto queues it there until that client id connects again.)

        Leaves the subscription at once (queued messages still arrive), stops once nothing came for `idle`
        seconds, and removes the session only if every message it delivered was stored and acknowledged;
        False (the session kept, nothing lost) otherwise."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if time.monotonic() > deadline or self.failed.is_set():
                self.stop()
                return False
        generation = self._client.generation
        self._thread.run(self._client.unsubscribe)
        seen, quiet_since = self.stats.received, time.monotonic()
        while time.monotonic() - quiet_since < idle and time.monotonic() < deadline and not self.failed.is_set():
            time.sleep(0.1)
            if self.stats.received != seen:
                seen, quiet_since = self.stats.received, time.monotonic()
        self.stop()
        with self._unacked_lock:
            settled = not self._unacked[generation]
        if not settled or self._client.generation != generation or self.failed.is_set():
            log.warning("bridge: %s not retired: not every message was stored and acknowledged", self.client_id)
            return False
        # A clean session with the same client id removes the persistent one (MQTT 3.1.1, 3.1.2.4).
        remover = Client(self.endpoint, self.client_id, clean_session=True, name="bridge-retire")
        thread = LoopThread("rtdp-bridge-retire", self.settings.loop)
        thread.start()
        try:
            thread.run(remover.start)
            if not remover.up.wait(30):
                return False
            thread.run_async(remover.stop())
        finally:
            thread.stop()
        log.info("bridge: retired %s after storing %d message(s) it had queued", self.client_id, seen)
        return True

    # -- the MQTT loop thread --------------------------------------------------------------------

    def _on_connect(self) -> None:
        self.stats.connects += 1

    def _on_subscribe(self, ok: bool) -> None:
        if ok:
            self.ready.set()

    def _on_disconnect(self, reason: str) -> None:
        self.ready.clear()

    def _deliver(self, publishes: list[Publish]) -> None:
        now = time.time()
        generation = self._client.generation
        try:
            items = [Incoming(p.topic.decode(), p.payload, p.mid, p.qos, p.retain, now, generation) for p in publishes]
        except UnicodeDecodeError:  # the writer rejects such a topic, naming it as best it can
            items = [
                Incoming(p.topic.decode(errors="replace"), p.payload, p.mid, p.qos, p.retain, now, generation)
                for p in publishes
            ]
        self.stats.received += len(items)
        qos1 = sum(1 for item in items if item.qos == 1)
        if qos1:
            with self._unacked_lock:
                self._unacked[generation] += qos1
        # Not acknowledged if stopped while waiting for room: the broker redelivers to our next session.
        self._queue.put_many(items, self._closed, PUT_POLL)

    def _send_notice(self, notice: Notice) -> None:
        size = len(notice.payload)
        if self._notice_bytes + size > MAX_NOTICE_BYTES and self._notice_bytes:
            self.stats.publish_dropped += 1
            self._ratelog.log(logging.WARNING, "publish", "bridge: notice on %s not sent: %d bytes of notices await"
                              " the broker's acknowledgement", notice.topic, self._notice_bytes)
            return
        try:
            sent = self._client.publish(notice.topic, notice.payload, qos=NOTICE_QOS)
        except MqttError as exc:  # paho's queue is full: dropped
            self.stats.publish_dropped += 1
            self._ratelog.log(logging.WARNING, "publish", "bridge: notice on %s not sent: %s", notice.topic, exc)
            return
        self._notice_bytes += size
        sent.add_done_callback(lambda _: self._settle_notice(size))

    def _settle_notice(self, size: int) -> None:
        self._notice_bytes -= size

    # -- the writer thread (bridge.batching) --------------------------------------------------------

    def _ack(self, batch: Sequence[Incoming], result: BatchResult) -> None:
        generation = self._client.generation
        # A message id belongs to the connection that delivered it; after a reconnect the broker
        # redelivers that message anyway (the (axis, x) upsert makes the second copy harmless).
        mids = [item.mid for item in batch if item.qos == 1 and item.generation == generation]
        if mids:
            self._thread.call(self._client.ack, mids, generation)
            with self._unacked_lock:
                self._unacked[generation] -= len(mids)

    def _publish(self, notice: Notice) -> None:
        self._thread.call(self._send_notice, notice)

    def _publish_message(self, topic: str, payload: bytes) -> None:
        # Alert actions, from their own threads (rtdp.alert_actions): on the MQTT loop like the notices.
        self._thread.call(self._send_notice, Notice(topic, payload))


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
    if settings.retire:
        try:
            log.info("bridge: retiring the session of %s at %s:%d", client_id, endpoint.host, endpoint.port)
            retired = bridge.retire()
        finally:
            db.close()
        if not retired:
            raise BridgeError(f"the session of {client_id} was not removed (see the log); run --retire again")
        return
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
