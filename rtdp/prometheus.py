"""`--metrics HOST:PORT` for a component run apart (`rtdp bridge`, `rtdp broker`): a Prometheus endpoint."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from rtdp.errors import ConfigError
from rtdp.settings import HostPort


def serve_metrics(address: HostPort, *collectors: Collector) -> tuple[WSGIServer, threading.Thread]:
    """Serve `collectors` at http://address/metrics from a daemon thread; `server.shutdown()` stops it.

    A port in use is a one-line ConfigError naming --metrics.
    """
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    try:
        return start_http_server(address.port, addr=address.host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"--metrics: cannot listen on {address}: {exc.strerror or exc}; choose another with --metrics HOST:PORT"
        ) from None
