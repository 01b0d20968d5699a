"""The embedded broker's Prometheus metrics: a collector reading AccessControl's counters and amqtt's sessions.

Read at scrape time, nothing counted twice. amqtt's session table belongs to the broker's event loop; a
scrape from another thread (`--metrics`' HTTP server) copies it first and retries if it changed under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    # Types only: broker.server imports this module for `rtdp broker --metrics`.
    from broker.server import EmbeddedBroker

COPY_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class SessionCounts:
    connected: int = 0
    # Persistent sessions of clients that are away (amqtt queues their QoS 1 messages in memory).
    offline: int = 0
    inflight_out: int = 0
    queued_offline: int = 0
    retained: int = 0
    # Messages read from clients and not yet settled (stored, for feeds/ in `rtdp serve`; QoS 1/2 ones not
    # acknowledged until then), and the clients the broker stopped reading from (broker.acks).
    unsettled: int = 0
    held: int = 0


def session_counts(broker: EmbeddedBroker) -> SessionCounts:
    """Connected clients, offline persistent sessions and what waits for them; zeros when not running."""
    amqtt: Any = broker._broker  # same package: EmbeddedBroker owns the amqtt instance
    if amqtt is None:
        return SessionCounts()
    sessions: list[tuple[Any, Any]] = []
    for _ in range(COPY_ATTEMPTS):
        try:
            sessions = list(amqtt._sessions.values())
            break
        except RuntimeError:  # changed size during the copy (a connect on the broker's loop): try again
            continue
    connected = offline = inflight = queued = unsettled = held = 0
    for session, handler in sessions:
        if session.transitions.state == "connected":
            connected += 1
            unsettled += getattr(handler, "unsettled", 0)
            held += bool(getattr(handler, "reading_paused", False))
        elif not session.clean_session:
            offline += 1
            queued += session.retained_messages.qsize()
        inflight += len(session.inflight_out)
    return SessionCounts(connected, offline, inflight, queued, len(amqtt._retained_messages), unsettled, held)


class BrokerCollector(Collector):
    """Exports one EmbeddedBroker's numbers."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker

    def collect(self) -> Iterable[Metric]:
        access = self.broker.access
        counts = session_counts(self.broker)
        yield GaugeMetricFamily("rtdp_broker_clients_connected", "Connected MQTT clients", value=counts.connected)
        yield GaugeMetricFamily(
            "rtdp_broker_offline_sessions", "Persistent sessions whose client is away", value=counts.offline
        )
        yield GaugeMetricFamily(
            "rtdp_broker_inflight_messages", "QoS 1/2 messages sent and not yet acknowledged", value=counts.inflight_out
        )
        yield GaugeMetricFamily(
            "rtdp_broker_queued_messages", "Messages queued in memory for offline persistent sessions",
            value=counts.queued_offline,
        )
        yield GaugeMetricFamily("rtdp_broker_retained_messages", "Retained messages held", value=counts.retained)
        yield GaugeMetricFamily(
            "rtdp_broker_unsettled_messages",
            "Messages read from clients and not yet stored (QoS 1/2: not yet acknowledged)",
            value=counts.unsettled,
        )
        yield GaugeMetricFamily(
            "rtdp_broker_clients_held",
            "Clients not read from because they have RTDP_MQTT_INFLIGHT messages unsettled (back-pressure)",
            value=counts.held,
        )
        yield CounterMetricFamily(
            "rtdp_broker_messages_in", "PUBLISH packets received (including refused ones)", value=access.messages_in
        )
        yield CounterMetricFamily(
            "rtdp_broker_messages_out", "Deliveries to subscribers permitted (sent, or queued for an offline session)",
            value=access.messages_out,
        )
        yield CounterMetricFamily(
            "rtdp_broker_auth_failures", "CONNECTs refused for bad or missing credentials", value=access.auth_failures
        )
        yield CounterMetricFamily(
            "rtdp_broker_refused_publishes", "Publishes dropped by the topic ACL", value=access.refused_publishes
        )
        yield CounterMetricFamily(
            "rtdp_broker_refused_subscribes", "Subscriptions refused by the topic ACL", value=access.refused_subscribes
        )
        yield CounterMetricFamily(
            "rtdp_broker_session_dropped",
            "Messages dropped from full offline-session queues (RTDP_SESSION_QUEUE), oldest first",
            value=getattr(self.broker._broker, "dropped_queued", 0),
        )
        yield CounterMetricFamily(
            "rtdp_broker_copies_throttled",
            "Pauses in reading a publisher whose user queued over RTDP_OFFLINE_COPIES copies a second for"
            " offline sessions",
            value=getattr(getattr(self.broker._broker, "copies", None), "throttled", 0),
        )
        yield CounterMetricFamily(
            "rtdp_broker_connections_refused",
            "Connections closed at once over RTDP_MQTT_MAX_CONNECTIONS or RTDP_MQTT_CONNECTIONS_PER_IP",
            value=self.broker.limits.refused,
        )
        yield GaugeMetricFamily("rtdp_broker_connections", "Open MQTT connections", value=self.broker.limits.open)
        yield CounterMetricFamily(
            "rtdp_broker_throttled_logins", "CONNECTs refused by the password throttle (CONNACK 5, delayed)",
            value=access.throttled,
        )
        yield CounterMetricFamily(
            "rtdp_broker_revoked", "Connections or sessions whose token or user was revoked while held",
            value=access.revoked,
        )

