"""Prometheus metrics, one registry per app so tests can build many apps in one process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingestion = Ingestion()
        self.registry.register(self.ingestion)
        self.pending = Gauge("rtdp_http_pending_publishes", "Publishes awaiting a PUBACK", registry=self.registry)
        self.sse_clients = Gauge("rtdp_sse_clients", "Connected SSE clients", registry=self.registry)
        self.sse_dropped = Counter(
            "rtdp_sse_dropped_clients", "SSE clients disconnected for falling behind", registry=self.registry
        )

    def count_ingest(self, outcome: str) -> None:
        """One ingestion request by outcome."""
        self.ingestion.count(outcome)

    def count_points(self, points: int) -> None:
        """Points accepted over HTTP."""
        self.ingestion.points += points

    def track_pending(self, read: Callable[[], int]) -> None:
        self.pending.set_function(lambda: float(read()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Ingestion:
    """`rtdp_http_ingest_total{outcome}` and `rtdp_http_ingest_points_total`, exposed as prometheus_client's
    Counters expose them, but counted in plain numbers on the event loop: a Counter's `inc` (its checks and
    lock) twice per request cost about as much as casting the request's value."""

    def __init__(self) -> None:
        self.points = 0
        self.created = time.time()
        self._outcomes: dict[str, int] = {}
        self._first: dict[str, float] = {}

    def count(self, outcome: str) -> None:
        try:
            self._outcomes[outcome] += 1
        except KeyError:
            self._first[outcome] = time.time()
            self._outcomes[outcome] = 1

    def accepted(self) -> None:
        """One request accepted with its one point."""
        self.count("accepted")
        self.points += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("rtdp_http_ingest", "HTTP ingestion requests by outcome", labels=["outcome"])
        for outcome, count in list(self._outcomes.items()):
            requests.add_metric([outcome], count, created=self._first.get(outcome))
        yield requests
        yield CounterMetricFamily(
            "rtdp_http_ingest_points", "Points accepted over HTTP (acknowledged by the broker)", value=self.points,
            created=self.created,
        )
