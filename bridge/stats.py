"""Counters for the bridge's metrics. Each field has one writing thread (paho's network thread for
`received`, the writer thread for the rest), so plain attributes need no lock; readers may see a
value a moment old."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bridge.histogram import BATCH_POINTS, SECONDS, Buckets


@dataclass
class Stats:
    received: int = 0
    points_stored: int = 0
    messages_stored: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    batch_points_max: int = 0
    commit_seconds_total: float = 0.0
    commit_seconds_max: float = 0.0
    last_commit_seconds: float = 0.0
    db_failures: int = 0
    # Notifications (stored/errors topics) not sent because paho's outgoing queue was full.
    publish_dropped: int = 0
    connects: int = 0
    # Exported as Prometheus histograms by bridge.metrics.
    batch_points_hist: Buckets = field(default_factory=lambda: Buckets(BATCH_POINTS))
    commit_seconds_hist: Buckets = field(default_factory=lambda: Buckets(SECONDS))
    # From the bridge receiving a message (Incoming.arrived) to the commit that stored it.
    store_delay_hist: Buckets = field(default_factory=lambda: Buckets(SECONDS))

    def record_batch(self, points: int, messages: int, seconds: float) -> None:
        self.batches += 1
        self.points_stored += points
        self.messages_stored += messages
        self.batch_points_max = max(self.batch_points_max, points)
        self.commit_seconds_total += seconds
        self.commit_seconds_max = max(self.commit_seconds_max, seconds)
        self.last_commit_seconds = seconds
        self.batch_points_hist.observe(points)
        self.commit_seconds_hist.observe(seconds)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "points_stored": self.points_stored,
            "messages_stored": self.messages_stored,
            "rejected": dict(self.rejected),
            "batches": self.batches,
            "batch_points_max": self.batch_points_max,
            "commit_seconds_total": self.commit_seconds_total,
            "commit_seconds_max": self.commit_seconds_max,
            "db_failures": self.db_failures,
            "publish_dropped": self.publish_dropped,
            "connects": self.connects,
        }
