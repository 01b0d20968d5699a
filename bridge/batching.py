"""The writer thread: batches off a bounded queue, stored by `Writer`, then acknowledged and announced.

The same loop serves both ways messages come in: a paho subscription (bridge.service.Bridge, which acks
after the commit and publishes notices with paho) and the embedded broker's intake (bridge.intake.Intake,
where acks are no-ops because amqtt already acknowledged, and notices go to the broker's own broadcast).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from bridge.writer import BatchResult, Incoming, Notice, Writer
from rtdp.settings import Settings

log = logging.getLogger("rtdp.bridge")

# When the queue runs dry, wait this long for more before committing: a burst being parsed by the
# network thread still lands in the same batch.
LINGER = 0.002
IDLE_WAIT = 0.2
# A batch collects for as long as the previous one took to store and announce, between these bounds
# and batch_interval: under light load a point waits a few ms (a steady 1,000/s never leaves the queue
# empty for LINGER, so a fixed 50 ms window added ~25 ms to every point), under heavy load batches grow
# with the commit time and the per-commit cost stays a small share of the writer's time.
MIN_WINDOW = 0.005


def estimated_points(payload: bytes) -> int:
    """Points in a payload, estimated without decoding (batches are bounded by points, roughly)."""
    head = payload[:1]
    if head == b"[":
        return max(1, payload.count(b"{"))
    return payload.count(b"\n") + 1


class Inbox(queue.Queue[Incoming]):
    """The bounded queue between whoever receives messages and the writer thread: a `queue.Queue` (so
    its depth and head are read the usual way, by metrics) that also moves many messages per lock
    acquisition. With one point per message, a Condition round per message on each side was a large
    share of both threads' time. `on_room`, if set, is called (on the taking thread, must not block) when
    messages were taken off a full queue: a producer on an event loop cannot wait on `not_full`."""

    on_room: Callable[[], None] | None = None

    def put_many(self, items: Sequence[Incoming], stop: threading.Event, poll: float = 0.5) -> bool:
        """Append `items` in order, waiting while the queue is full (back-pressure). False if `stop` was
        set while waiting: the rest is not queued."""
        done, count = 0, len(items)
        with self.not_full:
            while done < count:
                room = self.maxsize - len(self.queue) if self.maxsize > 0 else count - done
                if room <= 0:
                    if stop.is_set():
                        return False
                    self.not_full.wait(poll)
                    continue
                taken = items[done : done + room]
                self.queue.extend(taken)
                done += len(taken)
                self.not_empty.notify()
        return True

    def put_all(self, items: Sequence[Incoming]) -> None:
        """Append `items` in order without waiting, beyond `maxsize` if need be (the caller checked the room)."""
        with self.not_full:
            self.queue.extend(items)
            self.not_empty.notify()

    def get_many(self, points: int, timeout: float) -> tuple[list[Incoming], int]:
        """Messages off the head of the queue up to about `points` points (at least one message), waiting
        up to `timeout` seconds for the first, and their points (estimated); ([], 0) if none came."""
        with self.not_empty:
            if not self.queue:
                if timeout <= 0 or not self.not_empty.wait(timeout) or not self.queue:
                    return [], 0
            pending = self.queue
            # Only a full queue can have the producer waiting (put_many waits for room, never otherwise);
            # notify() is Python code, worth skipping on every other take.
            was_full = 0 < self.maxsize <= len(pending)
            taken: list[Incoming] = []
            count = 0
            while pending and count < points:
                item = pending.popleft()
                taken.append(item)
                count += estimated_points(item.payload)
            if was_full:
                self.not_full.notify()
                if self.on_room is not None:
                    self.on_room()
            return taken, count


class BatchLoop:
    """Runs the writer thread over `items`.

    `ack(batch, result)` runs after a batch committed (not after an abandoned one); `publish(notice)` for each
    stored/errors notice. Both are called on the writer thread and must not block. At stop, the loop
    drains up to one batch (`drain_all=False`: the rest stays unacknowledged for the broker to redeliver)
    or everything queued (`drain_all=True`: nobody would redeliver it).

    `group_commit=True` (the embedded broker's intake, whose publishers wait for the commit before they
    send more than their in-flight window): a batch is everything queued when the previous commit ended,
    taken at once. Lingering for more would only add latency, since what the publishers would send
    next waits for this commit's acks.
    """

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        items: Inbox,
        *,
        ack: Callable[[Sequence[Incoming], BatchResult], None],
        publish: Callable[[Notice], None],
        drain_all: bool = False,
        group_commit: bool = False,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.items = items
        self.ack = ack
        self.publish = publish
        self.drain_all = drain_all
        self.group_commit = group_commit
        self.failed = threading.Event()  # set if the writer thread died of an unexpected error
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0  # seconds the previous batch took (write, ack, notices)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtdp-bridge-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain and end the thread. If the database stays unavailable for `timeout` seconds, give up on
        the batch in hand (it is not acknowledged)."""
        self._stopping.set()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("bridge: database still failing after %.0fs; stopping without committing", timeout)
            self._abandon.set()
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = self._collect(wait=IDLE_WAIT)
                if batch:
                    self._flush(batch)
            while not self._abandon.is_set():
                batch = self._collect(wait=0.0)
                if batch:
                    self._flush(batch)
                if not batch or not self.drain_all:
                    break
        except Exception:
            # A bug, not bad data or a database outage (those are handled): stop rather than hold
            # unacknowledged messages forever; the owner notices `failed`.
            log.exception("bridge: writer thread failed")
            self.failed.set()
            raise
        finally:
            try:
                self.writer.db.close()
            except Exception:  # noqa: BLE001 -- closing this thread's connection at exit; nothing to do if it fails
                pass

    def _collect(self, wait: float) -> list[Incoming]:
        """Up to batch_size points (estimated) and a window of MIN_WINDOW to batch_interval seconds (the
        previous batch's duration); returns as soon as the queue stays empty for LINGER, so under light
        load points are stored right away and under heavy load batches grow by themselves while the
        previous commit runs."""
        limit = self.settings.batch_size
        batch, points = self.items.get_many(limit, wait)
        if not batch or wait == 0 or self.group_commit:
            return batch
        window = min(self.settings.batch_interval, max(MIN_WINDOW, self._last_flush))
        deadline = time.monotonic() + window
        while points < limit:
            more, counted = self.items.get_many(limit - points, 0.0)
            if not more:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                more, counted = self.items.get_many(limit - points, min(LINGER, remaining))
                if not more:
                    break
            batch += more
            points += counted
        return batch

    def _flush(self, batch: list[Incoming]) -> None:
        started = time.perf_counter()
        result = self.writer.write(batch, abandon=self._abandon)
        if result is None:
            return
        self.ack(batch, result)
        for notice in result.notices:
            self.publish(notice)
        self._last_flush = time.perf_counter() - started
