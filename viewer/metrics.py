"""Prometheus metrics, one registry per app so tests can build many apps in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingest = Counter(
            "rtdp_http_ingest", "HTTP ingestion requests by outcome", ["outcome"], registry=self.registry
        )
        self.ingest_points = Counter(
            "rtdp_http_ingest_points", "Points accepted over HTTP (acknowledged by the broker)",
            registry=self.registry,
        )
        self.pending = Gauge("rtdp_http_pending_publishes", "Publishes awaiting a PUBACK", registry=self.registry)
        self.sse_clients = Gauge("rtdp_sse_clients", "Connected SSE clients", registry=self.registry)
        self.sse_dropped = Counter(
            "rtdp_sse_dropped_clients", "SSE clients disconnected for falling behind", registry=self.registry
        )
        self._ingest_children: dict[str, Counter] = {}

    def count_ingest(self, outcome: str) -> None:
        """One ingestion request by outcome; the labelled child is looked up once per outcome, not per request."""
        child = self._ingest_children.get(outcome)
        if child is None:
            child = self._ingest_children[outcome] = self.ingest.labels(outcome=outcome)
        child.inc()

    def track_pending(self, read: Callable[[], int]) -> None:
        self.pending.set_function(lambda: float(read()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
