"""The bridge's Prometheus metrics: a collector that reads `Stats` (and the bridge's queue) at scrape time.

No second bookkeeping: every number comes from the counters the writer already keeps, histograms
included (`bridge.histogram.Buckets` fields of Stats).

`store_delay` is the time from the moment the bridge's MQTT client received a message from the broker
(`Incoming.arrived`) to the commit that stored it: queueing in the bridge, batching, decoding and the
transaction. It does not include the publisher-to-broker leg nor the broker's own queueing (a message's
x is the reading's time, not when it was published, so it cannot measure those).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bridge.histogram import Buckets
from bridge.stats import Stats
from rtdp.alerting import Alerting


def queue_lag(items: queue.Queue[Any], now: float | None = None) -> float:
    """Seconds the oldest message waiting in `items` has been there (0 when empty). Items need `arrived`."""
    # Queue.mutex guards Queue.queue (a deque); peeking at its head is the only way to see the oldest.
    with items.mutex:
        head = items.queue[0] if items.queue else None
    if head is None:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - float(head.arrived))


class BridgeCollector(Collector):
    """Exports one bridge's Stats. `queued`, `lag` and `full` (callables) add the queue's depth, the age
    of its oldest message and the intake's waits for room when the caller can see them (see
    `bridge_collector`)."""

    def __init__(
        self,
        stats: Stats,
        *,
        queued: Callable[[], int] | None = None,
        lag: Callable[[], float] | None = None,
        full: Callable[[], int] | None = None,
        alerting: Alerting | None = None,
    ) -> None:
        self.stats = stats
        self.queued = queued
        self.lag = lag
        self.full = full
        self.alerting = alerting

    def collect(self) -> Iterable[Metric]:
        s = self.stats
        yield CounterMetricFamily(
            "rtdp_bridge_messages_received", "MQTT messages the bridge received from the broker", value=s.received
        )
        yield CounterMetricFamily(
            "rtdp_bridge_messages_stored", "Messages whose points were all stored", value=s.messages_stored
        )
        points = CounterMetricFamily("rtdp_bridge_points", "Points by outcome", labels=["outcome"])
        points.add_metric(["stored"], s.points_stored)
        yield points
        rejected = CounterMetricFamily(
            "rtdp_bridge_rejected_messages", "Messages rejected (nothing stored), by reason code", labels=["reason"]
        )
        for reason, count in sorted(dict(s.rejected).items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily("rtdp_bridge_batches", "Committed batches", value=s.batches)
        yield _histogram("rtdp_bridge_batch_points", "Points per committed batch", s.batch_points_hist)
        yield _histogram("rtdp_bridge_commit_seconds", "Time to write and commit one batch", s.commit_seconds_hist)
        yield _histogram(
            "rtdp_bridge_store_delay_seconds",
            "From the bridge receiving a message from the broker to the commit that stored it",
            s.store_delay_hist,
        )
        yield GaugeMetricFamily("rtdp_bridge_batch_points_max", "Largest batch so far", value=s.batch_points_max)
        yield GaugeMetricFamily(
            "rtdp_bridge_commit_seconds_max", "Slowest commit so far", value=s.commit_seconds_max
        )
        yield GaugeMetricFamily(
            "rtdp_bridge_last_commit_seconds", "Duration of the latest commit", value=s.last_commit_seconds
        )
        yield CounterMetricFamily(
            "rtdp_bridge_db_failures", "Failed database attempts (each batch is retried)", value=s.db_failures
        )
        yield CounterMetricFamily(
            "rtdp_bridge_notices_dropped", "Stored/errors notices not sent (paho's queue was full)",
            value=s.publish_dropped,
        )
        yield CounterMetricFamily("rtdp_bridge_connects", "Successful connections to the broker", value=s.connects)
        if self.queued is not None:
            yield GaugeMetricFamily(
                "rtdp_bridge_queued_messages", "Messages received, waiting for the writer (not acknowledged)",
                value=self.queued(),
            )
        if self.lag is not None:
            yield GaugeMetricFamily(
                "rtdp_bridge_lag_seconds", "Age of the oldest message waiting in the bridge's queue (0 when empty)",
                value=self.lag(),
            )
        if self.full is not None:
            yield CounterMetricFamily(
                "rtdp_bridge_intake_full_waits",
                "Times a message waited for room in the embedded broker's full intake (its publisher was held)",
                value=self.full(),
            )
        if self.alerting is not None:
            yield from alert_metrics(self.alerting)


def alert_metrics(alerting: Alerting) -> Iterable[Metric]:
    """The alerts judged and acted on by this process (rtdp.alerting, rtdp.alert_actions)."""
    judge, sweeper, actions = alerting.judge, alerting.sweeper, alerting.actions
    yield GaugeMetricFamily(
        "rtdp_alert_rules", "Enabled alert rules in this process's index (as of its latest batch)",
        value=sum(len(rules) for rules in judge.index.by_axis.values()),
    )
    yield CounterMetricFamily(
        "rtdp_alert_points_judged", "Stored points on axes with enabled alert rules, judged in their commit",
        value=judge.judged,
    )
    yield CounterMetricFamily(
        "rtdp_alert_rule_steps",
        "Rules stepped through a point (a batch whose values lie inside every rule's band steps none)",
        value=judge.steps,
    )
    transitions = CounterMetricFamily(
        "rtdp_alert_transitions", "Alert state changes recorded, by who judged them", labels=["by"]
    )
    transitions.add_metric(["point"], judge.transitions)
    transitions.add_metric(["time"], sweeper.transitions)
    yield transitions
    yield CounterMetricFamily(
        "rtdp_alert_repeats", "Actions run again for rules still firing (repeat_min)", value=sweeper.repeats
    )
    yield GaugeMetricFamily(
        "rtdp_alert_lease_held", "1 while this process holds the lease on time-based rules (silent, for, repeat)",
        value=int(sweeper.holding),
    )
    s = actions.stats
    sent = CounterMetricFamily(
        "rtdp_alert_actions", "Alert actions run, by type and outcome", labels=["type", "outcome"]
    )
    for kind, outcome, value in (
        ("mqtt", "sent", s.published), ("owner_topic", "sent", s.owner_topic),
        ("owner_topic", "refused", s.owner_topic_refused), ("webhook", "sent", s.webhooks_ok),
        ("webhook", "failed", s.webhooks_failed), ("email", "sent", s.emails), ("email", "failed", s.emails_failed),
    ):
        sent.add_metric([kind, outcome], value)
    yield sent
    yield CounterMetricFamily(
        "rtdp_alert_actions_queued", "Alerts handed to the action lanes after their commit", value=s.queued
    )
    yield CounterMetricFamily(
        "rtdp_alert_actions_dropped", "Alerts whose actions were dropped: the lanes' queue was full", value=s.dropped
    )
    yield GaugeMetricFamily(
        "rtdp_alert_actions_waiting", "Alerts queued or running on the action lanes now", value=actions.waiting
    )


def _histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=buckets.cumulative(), sum_value=buckets.sum)


class _Fed(Protocol):
    """A Bridge (MQTT subscription) or an Intake (the embedded broker's hook): Stats and their queue."""

    stats: Stats

    @property
    def _queue(self) -> queue.Queue[Any]: ...  # read-only here, so a Queue subclass (Inbox) fits


def bridge_collector(source: _Fed) -> BridgeCollector:
    """The collector for a running Bridge or Intake: its Stats plus its queue's depth and lag, and (for an
    Intake) how many times the broker waited because its queue was full."""
    items = source._queue  # same package: the queue is the bridge's own business
    return BridgeCollector(
        source.stats,
        queued=items.qsize,
        lag=lambda: queue_lag(items),
        full=(lambda: int(getattr(source, "full", 0))) if hasattr(source, "full") else None,
        alerting=getattr(source, "alerting", None),
    )

