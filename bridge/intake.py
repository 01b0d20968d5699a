"""The bridge inside the embedded broker's process (`rtdp serve`): messages in from a broker hook, not MQTT.

The embedded broker hands over each `feeds/...` message it has accepted and permitted (broker.intake);
`put()` queues it for the same BatchLoop and Writer as the subscribing Bridge. Notices
(`rtdp/stored/...`, `rtdp/errors/...`) go to a `publish` callable, the broker's own broadcast, so
viewers receive them over MQTT as always.

Why not a subscription: amqtt's QoS 1 delivery to the bridge's client (a task and a 5 s timer per
message, a socket write, our PUBACK read back) was its costliest work; this skips it.

Acknowledgement after commit: each message comes with the broker's `settled` future (broker.acks); once
its batch committed (a rejected message: once its rejection is recorded) the writer thread resolves
the batch's futures on the broker's loop with one ring of its doorbell (rtdp.doorbell), and the broker
sends the PUBACKs. Group commit: the writer starts the next commit as soon as the last one finished, with
everything queued meanwhile, so a publisher's in-flight window (20 for paho and mosquitto_pub) fills
the next batch instead of waiting for a timer.

Back-pressure: when the queue is full `put()` waits, which holds the publisher's session in the broker
(and, past its in-flight limit, the broker stops reading from it); the writer thread wakes it when it
takes from a full queue. Nothing is acknowledged and dropped. Waits are counted (`full`) and logged as
a rate-limited summary. `stop()` stores everything queued before returning.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Sequence

import peewee as pw

from bridge.batching import BatchLoop, Inbox
from bridge.errors import BridgeError, Rejected
from bridge.stats import Stats
from bridge.writer import BatchResult, Incoming, Notice, Writer
from rtdp.alerting import Alerting
from rtdp.doorbell import Doorbell
from rtdp.errors import RtdpError
from rtdp.handoff import Handoff
from rtdp.logs import RateLimitedLog
from rtdp.settings import Settings

log = logging.getLogger("rtdp.bridge")

# Messages queued for the writer, from all clients together. Each client has at most
# settings.mqtt_inflight of its messages unsettled, so this is reached only when the database stalls.
CAPACITY = 10_000

Publish = Callable[[str, bytes], None]


class Intake:
    """Stores what the embedded broker hands to `put()`; `start(publish)` once the broker runs.

    `put` may be called before `start` (messages wait in the queue). `stats` and `full` (how many times a
    message waited for room) are the counters; `failed` is set if the writer thread died of an
    unexpected error.
    """

    def __init__(
        self,
        settings: Settings,
        db: pw.Database,
        *,
        capacity: int = CAPACITY,
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        self.full = 0  # times a message waited because the queue was full (written by the broker's loop only)
        self.alerting = Alerting(db, settings)
        self._writer = Writer(db, settings, self.stats, alerting=self.alerting)
        self._queue = Inbox(maxsize=capacity)
        self._queue.on_room = self._wake
        self._loop: asyncio.AbstractEventLoop | None = None
        self._doorbell: Doorbell | None = None  # the writer thread's way to the loop (acks, wake-ups)
        self._room = asyncio.Event()
        self._pending: list[Incoming] = []  # offered in this loop iteration, not handed to the writer yet
        self._publish: Publish | None = None
        self._batches = BatchLoop(
            settings, self._writer, self._queue, ack=self._ack, publish=self._send, drain_all=True, group_commit=True
        )
        self.failed = self._batches.failed
        self._ratelog = RateLimitedLog(log)

    async def put(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        arrived: float,
        creator: int | None = None,
        settled: asyncio.Future[None] | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        """Queue one message for storing (on the broker's loop), waiting while the queue is full; `settled`
        is resolved once it is stored. `handoff`: a point from HTTP ingestion in this process (rtdp.handoff),
        its receipt resolved with the outcome.

        `creator` is the publisher's user id when the message may create its feed (broker.intake): the
        writer then creates the feed for that user once the payload decoded (bridge.routes).

        `retain` is the publisher's flag. It is not passed on: over a subscription the bridge gets a live
        publish with retain 0 (MQTT 3.1.1, 3.3.1.3) and only copies re-sent on subscribe with retain 1,
        which are what the writer's retained-without-x rule is for; the intake only sees live publishes.
        """
        if self._loop is None:
            self._attach()
        self._hand_over()  # what `offer` took first stays first
        item = Incoming(topic, payload, 0, 0, False, arrived, 0, creator, settled, handoff)
        while True:
            try:
                self._queue.put_nowait(item)
                break
            except queue.Full:
                self.full += 1
                self._ratelog.log(
                    logging.WARNING, "intake_full",
                    "bridge: intake queue full (%d messages; the database is too slow or unavailable): "
                    "publishers wait, %d waits so far",
                    self._queue.maxsize, self.full,
                )
                # Cleared before waiting, on this loop: a wake-up scheduled by the writer thread runs after.
                self._room.clear()
                await self._room.wait()
        self.stats.received += 1

    def has_room(self) -> bool:
        """Whether `put` would return at once (the queue is not full)."""
        return len(self._queue.queue) + len(self._pending) < self._queue.maxsize

    def offer(
        self,
        topic: str,
        payload: bytes,
        arrived: float,
        creator: int | None,
        settled: asyncio.Future[None] | None,
        handoff: Handoff | None = None,
    ) -> bool:
        """`put` without waiting (broker.fastpath, and HTTP ingestion with its `handoff`, on the broker's
        loop): False, and nothing taken, when the queue has no room. What is offered in one loop iteration
        reaches the writer thread in one hand-over (one lock, one wake-up, at the end of the iteration): with
        one point per message, a lock round and a notify per message were a tenth of `rtdp serve`'s time,
        contended by the writer thread. The messages a read brought in also land in the same commit."""
        pending = self._pending
        if len(self._queue.queue) + len(pending) >= self._queue.maxsize:
            return False
        if not pending:
            if self._loop is None:
                self._attach()
            assert self._loop is not None
            self._loop.call_soon(self._hand_over)
        pending.append(Incoming(topic, payload, 0, 0, False, arrived, 0, creator, settled, handoff))
        self.stats.received += 1
        return True

    def _hand_over(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._queue.put_all(pending)  # room was checked by `offer`, and only this loop adds

    def start(self, publish: Publish) -> None:
        """Start the writer thread; notices go to `publish(topic, payload)` (called on that thread)."""
        if self._publish is not None:
            raise BridgeError("intake already started")
        self._publish = publish
        self._batches.start()
        self.alerting.start(publish)

    def stop(self, timeout: float = 30.0) -> None:
        """Store everything queued (call it after the broker stopped handing messages over). If the
        database stays unavailable for `timeout` seconds, what is left is lost (logged)."""
        self._hand_over()
        self._batches.stop(timeout)
        if self._publish is not None:
            self.alerting.stop()
        left = self._queue.qsize()
        if left:
            log.error("bridge: intake stopped with %d messages not stored (database unavailable)", left)
        doorbell, loop = self._doorbell, self._loop
        if doorbell is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(doorbell.close)  # after the last batch's acks
            except RuntimeError:
                doorbell.close()  # the loop closed: its connections and their acks are gone

    def _ack(self, batch: Sequence[Incoming], result: BatchResult) -> None:
        # On the writer thread, after the commit: one hop to the broker's loop for the whole batch.
        futures = [item.settled for item in batch if item.settled is not None]
        receipts = [
            (item.handoff.receipt, result.refused.get(index))
            for index, item in enumerate(batch)
            if item.handoff is not None
        ]
        if futures or receipts:
            self._on_loop(_settle, futures, receipts)

    def _wake(self) -> None:
        # On the writer thread: it took messages off a full queue.
        self._on_loop(self._room.set)

    def _on_loop(self, callback: Callable[..., object], *args: object) -> None:
        doorbell = self._doorbell
        if doorbell is None:
            return  # nothing was put from a loop: nobody waits
        doorbell.ring(callback, *args)  # after `stop` closed it, nothing: the connections are gone

    def _attach(self) -> None:
        # The first put or offer, on the broker's loop: where the writer thread sends acks and wake-ups.
        self._loop = asyncio.get_running_loop()
        self._doorbell = Doorbell(self._loop)

    def _send(self, notice: Notice) -> None:
        assert self._publish is not None  # the loop runs only after start(publish)
        self._publish(notice.topic, notice.payload)


def _settle(
    futures: list[asyncio.Future[None]], receipts: list[tuple[asyncio.Future[RtdpError | None], Rejected | None]]
) -> None:
    for settled in futures:
        if not settled.done():
            settled.set_result(None)
    for receipt, rejection in receipts:
        if not receipt.done():  # its caller may have given up (timeout)
            receipt.set_result(rejection)
