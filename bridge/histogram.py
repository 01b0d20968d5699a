"""A fixed-bucket histogram as plain counters, for Stats fields written by one thread.

prometheus_client's Histogram takes a lock per observation; the bridge's counters have one writing
thread each (see bridge.stats), so plain ints suffice and bridge.metrics reads them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Points per committed batch (batch_size is at most 100,000).
BATCH_POINTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000)
# Seconds: a commit, or a message's wait from its arrival at the bridge to its commit.
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """Counts of observations per upper bound (Prometheus `le`, inclusive), their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs ending with +Inf, as HistogramMetricFamily takes them."""
        result: list[tuple[str, float]] = []
        running = 0
        counts = list(self.counts)  # one copy: the writer thread may add while we read
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return result
