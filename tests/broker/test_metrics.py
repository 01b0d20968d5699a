"""The embedded broker's Prometheus collector moves when clients connect, publish and are refused."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker.metrics import BrokerCollector
from tests.broker.clients import connected, login_result
from tests.broker.conftest import PASSWORD
from tests.support.embedded import EmbeddedBrokerHandle
from tests.support.env import wait_for


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of the registry, by name (counters end in _total)."""
    text = generate_latest(registry).decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_follow_clients_messages_and_refusals(embedded: EmbeddedBrokerHandle) -> None:
    registry = CollectorRegistry()
    registry.register(BrokerCollector(embedded.broker))
    before = scrape(registry)
    assert before["rtdp_broker_clients_connected"] == 0
    assert before["rtdp_broker_unsettled_messages"] == before["rtdp_broker_clients_held"] == 0

    assert login_result(embedded.endpoint("ep@nothing.com", "wrong")) is not None
    with (
        connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep,
        connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap,
    ):
        wait_for(lambda: scrape(registry)["rtdp_broker_clients_connected"] == 2, what="two clients connected")
        assert ep.subscribe("feeds/manual_feed_a/+") == 1
        assert ap.subscribe("feeds/manual_feed_a/+") == 0x80  # ap may not read ep's feed
        ep.publish("feeds/manual_feed_a/axis_a00", b"1")
        ep.wait_message("feeds/manual_feed_a/axis_a00", b"1")
        ap.publish("feeds/manual_feed_a/axis_a00", b"2")  # refused: dropped after PUBACK
        wait_for(lambda: scrape(registry)["rtdp_broker_refused_publishes_total"] >= 1, what="refusal counted")
        after = scrape(registry)
    assert after["rtdp_broker_auth_failures_total"] == before["rtdp_broker_auth_failures_total"] + 1
    assert after["rtdp_broker_refused_subscribes_total"] == before["rtdp_broker_refused_subscribes_total"] + 1
    assert after["rtdp_broker_messages_in_total"] >= before["rtdp_broker_messages_in_total"] + 2
    assert after["rtdp_broker_messages_out_total"] >= before["rtdp_broker_messages_out_total"] + 1
    wait_for(lambda: scrape(registry)["rtdp_broker_clients_connected"] == 0, what="clients gone")
