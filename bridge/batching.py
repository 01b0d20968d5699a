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

from bridge.writer import Incoming, Notice, Writer
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


class BatchLoop:
    """Runs the writer thread over `items`.

    `ack(batch)` runs after a batch committed (not after an abandoned one); `publish(notice)` for each
    stored/errors notice. Both are called on the writer thread and must not block. At stop, the loop
    drains up to one batch (`drain_all=False`: the rest stays unacknowledged for the broker to redeliver)
    or everything queued (`drain_all=True`: nobody would redeliver it).
    """

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        items: queue.Queue[Incoming],
        *,
        ack: Callable[[Sequence[Incoming]], None],
        publish: Callable[[Notice], None],
        drain_all: bool = False,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.items = items
        self.ack = ack
        self.publish = publish
        self.drain_all = drain_all
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
        try:
            first = self.items.get(timeout=wait) if wait > 0 else self.items.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        points = estimated_points(first.payload)
        window = min(self.settings.batch_interval, max(MIN_WINDOW, self._last_flush))
        deadline = time.monotonic() + window
        limit = self.settings.batch_size
        while points < limit:
            try:
                item = self.items.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or wait == 0:
                    break
                try:
                    item = self.items.get(timeout=min(LINGER, remaining))
                except queue.Empty:
                    break
            batch.append(item)
            points += estimated_points(item.payload)
        return batch

    def _flush(self, batch: list[Incoming]) -> None:
        started = time.perf_counter()
        result = self.writer.write(batch, abandon=self._abandon)
        if result is None:
            return
        self.ack(batch)
        for notice in result.notices:
            self.publish(notice)
        self._last_flush = time.perf_counter() - started
