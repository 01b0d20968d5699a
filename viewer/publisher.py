"""The viewer's MQTT client: QoS 1 publishes with back-pressure, and the stored-points subscription.

Runs on the viewer's event loop through rtdp.mqtt.Client. A publish is answered only once the broker sent
its PUBACK: at most `max_pending` wait at a time (paho's message ids wrap at 65,535 and would silently lose
points), beyond that, on disconnect or on timeout the caller gets Unavailable (503) - never a success for a
point the broker did not acknowledge. After a disconnect, the publishes answered 503 are not resent
(`resend=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from rtdp.errors import Unavailable
from rtdp.mqtt import Client, Endpoint, MqttError, Publish, Subscription
from rtdp.notices import StoredEvent, decode_stored_notice
from rtdp.topic import ALERTS_PREFIX, STORED_PREFIX, check_name

log = logging.getLogger(__name__)

STORED_FILTER = f"{STORED_PREFIX}/+"
# With alerts too: `rtdp/stored/<feed>` and `rtdp/alerts/<feed>` in one subscription.
NOTICES_FILTER = "rtdp/+/+"
_STORED_PREFIX = f"{STORED_PREFIX}/".encode()
_ALERTS_PREFIX = f"{ALERTS_PREFIX}/".encode()

# (feed, its points just stored, the feed's newest point id before them or None): viewer.order.InOrder.dispatch.
StoredHandler = Callable[[str, list[StoredEvent], int | None], None]
AlertHandler = Callable[[str, bytes], None]


class Publisher:
    """QoS 1 publisher and stored-points subscriber; start() and stop() on the event loop that uses it."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        max_pending: int,
        timeout: float,
        on_stored: StoredHandler | None = None,
        watched: Callable[[str], bool] = lambda feed: True,
        on_alert: AlertHandler | None = None,
        subscribe: bool = True,
        held: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.endpoint = endpoint
        self.max_pending = max_pending
        self.timeout = timeout
        self.on_stored = on_stored
        # Alerts (rtdp.alert_actions) for the feed's SSE streams: the browser notifications.
        self.on_alert = on_alert
        # Notices for a feed no stream listens to are dropped unparsed: a stream that opens later
        # replays from the database (Last-Event-ID), and parsing cost the loop a tenth of rtdp serve.
        self.watched = watched
        # Around each batch of notices read together (the hub's `held`: it delivers them together).
        self.held = held
        # Callers waiting for their PUBACK (a metric); the client's `outstanding` also counts the mids whose
        # caller gave up (timeout) but whose PUBACK paho still awaits: both count against max_pending.
        self.pending = 0
        # In `rtdp serve` the notices come in the process (rtdp.handoff.NoticeTap): no subscription.
        topic_filter = NOTICES_FILTER if on_alert is not None else STORED_FILTER
        subscription = Subscription(topic_filter, self._on_messages) if on_stored is not None and subscribe else None
        # paho's own in-flight limit off (0): after every PUBACK it scans all its outgoing messages for one
        # to release, O(in flight) per point. max_pending bounds what paho holds instead.
        self.client = Client(
            endpoint,
            client_id,
            max_inflight=0,
            resend=False,
            subscription=subscription,
            name="viewer",
        )

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def outstanding(self) -> int:
        """Publishes paho still awaits a PUBACK for: what max_pending bounds (mids wrap at 65,535)."""
        return self.client.outstanding

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin connecting (and reconnecting) in a task on `loop`; call from that loop's thread."""
        self.client.start()

    def wait_connected(self, timeout: float) -> bool:
        """Blocking (call from a thread other than the loop's): True once connected."""
        return self.client.up.wait(timeout)

    async def stop(self) -> None:
        """Disconnect cleanly and fail whatever still waits (503)."""
        await self.client.stop()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it; Unavailable otherwise."""
        client = self.client
        if not client.connected:
            raise Unavailable("the MQTT broker is not connected; retry later", retry_after=2)
        if client.outstanding >= self.max_pending:
            raise Unavailable("too many points awaiting the broker's acknowledgement; retry later", retry_after=1)
        try:
            future = client.publish(topic, payload, qos=1)
        except MqttError as exc:
            raise Unavailable(exc.message, retry_after=2) from None
        # A timer on the future rather than asyncio.wait_for: no extra task or timeout scope per point.
        timer = asyncio.get_running_loop().call_later(self.timeout, _time_out, future)
        self.pending += 1
        try:
            await future
        except MqttError as exc:  # the connection was lost
            raise Unavailable(exc.message, retry_after=2) from None
        finally:
            self.pending -= 1
            timer.cancel()

    def _on_messages(self, publishes: list[Publish]) -> None:
        with self.held():
            for publish in publishes:
                if publish.topic.startswith((_STORED_PREFIX, _ALERTS_PREFIX)):
                    try:
                        topic = publish.topic.decode()
                    except UnicodeDecodeError:
                        continue
                    self.take_notice(topic, publish.payload)

    def take_notices(self, notices: list[tuple[str, bytes]]) -> None:
        """Notices handed over in the process (rtdp.handoff.NoticeTap), taken together."""
        with self.held():
            for topic, payload in notices:
                self.take_notice(topic, payload)

    def take_notice(self, topic: str, payload: bytes | bytearray) -> None:
        """A `rtdp/stored/<feed>` or `rtdp/alerts/<feed>` notice, from the subscription or handed over in
        the process (rtdp.handoff.NoticeTap)."""
        if topic.startswith(ALERTS_PREFIX + "/"):
            self._alert(topic, bytes(payload))
        elif topic.startswith(STORED_PREFIX + "/"):
            self.take_stored(topic, payload)

    def take_stored(self, topic: str, payload: bytes | bytearray) -> None:
        """One `rtdp/stored/<feed>` notice, from the subscription or handed over in the process
        (rtdp.handoff.NoticeTap): its events go to `on_stored` if a stream listens to the feed."""
        handler = self.on_stored
        assert handler is not None
        feed = topic[len(STORED_PREFIX) + 1 :]
        if not self.watched(feed):
            return
        try:
            check_name(feed, "feed")
            events, after = decode_stored_notice(payload)
        except Exception:  # noqa: BLE001 -- a bad message must never break the read loop
            log.warning("ignoring malformed message on %s", topic[:100])
            return
        if events:
            try:
                handler(feed, events, after)
            except Exception:  # noqa: BLE001 -- one feed's failure must not lose the rest of the read
                log.exception("stored-points handler failed for feed %s", feed)

    def _alert(self, topic: str, payload: bytes) -> None:
        if self.on_alert is None:
            return
        try:
            feed = check_name(topic[len(ALERTS_PREFIX) + 1 :], "feed")
        except Exception:  # noqa: BLE001 -- a bad topic must never break the read loop
            return
        if self.watched(feed) and len(payload) <= 65536:
            self.on_alert(feed, payload)


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(Unavailable(
            "the MQTT broker did not acknowledge in time (the point may still be stored: a retry with the same x"
            " replaces it); retry later", retry_after=2))
