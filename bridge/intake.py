"""The bridge inside the embedded broker's process (`rtdp serve`): messages in from a broker hook, not MQTT.

The embedded broker hands over each `feeds/...` message it has accepted and permitted (broker.intake);
`offer()` puts it on a bounded queue without blocking (it runs on the broker's event loop), and the same
BatchLoop and Writer as the subscribing Bridge store it. Notices (`rtdp/stored/...`, `rtdp/errors/...`)
go to a `publish` callable, the broker's own broadcast, so viewers receive them over MQTT as always.

Why not a subscription: amqtt's QoS 1 delivery to the bridge's client (a task and a 5 s timer per
message, a socket write, our PUBACK read back) was its costliest work; this skips it.

Acknowledgement and back-pressure: amqtt PUBACKs a publish before any hook sees it and offers no way to
slow the reading of a client's socket (its reader queues every publish without limit, its plugin events
are fire-and-forget tasks). Waiting in the hook would only move the pile into amqtt's own unbounded
memory. So the queue is large (CAPACITY messages, seconds of amqtt's peak rate, minutes of a database
outage at normal rates) and when it is full a message is dropped, counted (`dropped`) and logged as
an error: bounded memory rather than growth until the process dies. Nothing here is redelivered, so
`stop()` stores everything queued before returning.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Sequence

import peewee as pw

from bridge.batching import BatchLoop, Inbox
from bridge.errors import BridgeError
from bridge.stats import Stats
from bridge.writer import Incoming, Notice, Writer
from rtdp.logs import RateLimitedLog
from rtdp.settings import Settings

log = logging.getLogger("rtdp.bridge")

CAPACITY = 100_000

Publish = Callable[[str, bytes], None]


class Intake:
    """Stores what the embedded broker hands to `offer()`; `start(publish)` once the broker runs.

    `offer` may be called before `start` (messages wait in the queue). `stats` and `dropped` are the
    counters; `failed` is set if the writer thread died of an unexpected error.
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
        self.dropped = 0  # messages lost because the queue was full (written by the broker's loop only)
        self._writer = Writer(db, settings, self.stats)
        self._queue = Inbox(maxsize=capacity)
        self._publish: Publish | None = None
        self._batches = BatchLoop(
            settings, self._writer, self._queue, ack=self._ack, publish=self._send, drain_all=True
        )
        self.failed = self._batches.failed
        self._ratelog = RateLimitedLog(log)

    def offer(self, topic: str, payload: bytes, retain: bool, arrived: float, creator: int | None = None) -> bool:
        """Queue one message for storing; never blocks. False if it was dropped (queue full).

        `creator` is the publisher's user id when the message may create its feed (broker.intake): the
        writer then creates the feed for that user once the payload decoded (bridge.routes).

        `retain` is the publisher's flag. It is not passed on: over a subscription the bridge gets a live
        publish with retain 0 (MQTT 3.1.1, 3.3.1.3) and only copies re-sent on subscribe with retain 1,
        which are what the writer's retained-without-x rule is for; the intake only sees live publishes.
        """
        self.stats.received += 1
        try:
            self._queue.put_nowait(Incoming(topic, payload, 0, 0, False, arrived, 0, creator))
        except queue.Full:
            self.dropped += 1
            self._ratelog.log(
                logging.ERROR, "intake_full",
                "bridge: intake queue full (%d messages; the database is too slow or unavailable): "
                "dropped a message on %r, %d dropped so far",
                self._queue.maxsize, topic[:120], self.dropped,
            )
            return False
        return True

    def start(self, publish: Publish) -> None:
        """Start the writer thread; notices go to `publish(topic, payload)` (called on that thread)."""
        if self._publish is not None:
            raise BridgeError("intake already started")
        self._publish = publish
        self._batches.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store everything queued (call it after the broker stopped handing messages over). If the
        database stays unavailable for `timeout` seconds, what is left is lost (logged)."""
        self._batches.stop(timeout)
        left = self._queue.qsize()
        if left:
            log.error("bridge: intake stopped with %d messages not stored (database unavailable)", left)

    def _ack(self, batch: Sequence[Incoming]) -> None:
        pass  # amqtt acknowledged each message before handing it over

    def _send(self, notice: Notice) -> None:
        assert self._publish is not None  # the loop runs only after start(publish)
        self._publish(notice.topic, notice.payload)
