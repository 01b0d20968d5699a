"""The bridge's Prometheus collector reads Stats and the queue: it moves as points flow through Mosquitto."""

from __future__ import annotations

import json
import queue
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import BridgeCollector, bridge_collector, queue_lag
from bridge.stats import Stats
from bridge.writer import Incoming
from rtdp import alerts
from rtdp.models import User
from rtdp.permissions import OPERATOR
from rtdp.prometheus import serve_metrics
from rtdp.settings import HostPort
from rtdp.store import create_axis
from tests.bridge.conftest import BridgeHarness, make_feed
from tests.support.env import wait_for
from tests.support.receivers import WebhookReceiver


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(registry).decode())


def test_points_rejections_and_batches_move(harness: BridgeHarness, owner: User) -> None:
    make_feed(owner, "f", x_cast="float")
    bridge = harness.start()
    registry = CollectorRegistry()
    registry.register(bridge_collector(bridge))
    before = scrape(registry)
    assert before[("rtdp_bridge_points_total", (("outcome", "stored"),))] == 0
    assert before[("rtdp_bridge_queued_messages", ())] == 0
    assert before[("rtdp_bridge_lag_seconds", ())] == 0

    harness.publisher.send("feeds/f/a", '[{"x": 1, "y": 1}, {"x": 2, "y": 2}]')
    harness.publisher.send("feeds/f/a", "not a number")
    wait_for(lambda: harness.notices.on("rtdp/errors/f/a"), what="the rejection")
    wait_for(lambda: len(harness.points("f", "a")) == 2, what="2 points")
    wait_for(lambda: scrape(registry)[("rtdp_bridge_messages_received_total", ())] >= 2, what="2 received")
    after = scrape(registry)
    assert after[("rtdp_bridge_points_total", (("outcome", "stored"),))] == 2
    rejected = {labels: v for (name, labels), v in after.items() if name == "rtdp_bridge_rejected_messages_total"}
    assert sum(rejected.values()) == 1 and all(label == "reason" for ((label, _),) in rejected)
    assert after[("rtdp_bridge_batches_total", ())] >= 1
    assert after[("rtdp_bridge_batch_points_sum", ())] == 2
    assert after[("rtdp_bridge_commit_seconds_count", ())] == after[("rtdp_bridge_batches_total", ())]
    # Both stored points' messages went through the publish-to-store histogram (the rejected one did not).
    assert after[("rtdp_bridge_store_delay_seconds_count", ())] == 1
    assert after[("rtdp_bridge_store_delay_seconds_bucket", (("le", "+Inf"),))] == 1


def test_histograms_and_the_lag_of_the_queue() -> None:
    stats = Stats()
    hist = stats.commit_seconds_hist
    hist.observe(0.003)
    hist.observe(7.0)
    items: queue.Queue[Incoming] = queue.Queue()
    assert queue_lag(items) == 0.0
    items.put(Incoming("feeds/f/a", b"1", 1, 1, False, 100.0))
    items.put(Incoming("feeds/f/a", b"2", 2, 1, False, 105.0))
    assert queue_lag(items, now=110.0) == 10.0  # the oldest one counts

    registry = CollectorRegistry()
    registry.register(BridgeCollector(stats, queued=items.qsize, lag=lambda: queue_lag(items, now=110.0)))
    m = scrape(registry)
    assert m[("rtdp_bridge_commit_seconds_bucket", (("le", "0.0025"),))] == 0
    assert m[("rtdp_bridge_commit_seconds_bucket", (("le", "0.005"),))] == 1
    assert m[("rtdp_bridge_commit_seconds_bucket", (("le", "+Inf"),))] == 2
    assert m[("rtdp_bridge_commit_seconds_count", ())] == 2
    assert m[("rtdp_bridge_queued_messages", ())] == 2
    assert m[("rtdp_bridge_lag_seconds", ())] == 10.0


def test_serve_metrics_answers_over_http() -> None:
    stats = Stats()
    stats.points_stored = 7
    server, thread = serve_metrics(HostPort("127.0.0.1", 0), BridgeCollector(stats))
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert samples(text)[("rtdp_bridge_points_total", (("outcome", "stored"),))] == 7


def test_an_intake_also_reports_its_waits_for_room() -> None:
    class FakeIntake:  # the shape of bridge.intake.Intake: stats, its queue, and `full`
        def __init__(self) -> None:
            self.stats = Stats()
            self._queue: queue.Queue[Incoming] = queue.Queue()
            self.full = 3

    registry = CollectorRegistry()
    registry.register(bridge_collector(FakeIntake()))
    assert scrape(registry)[("rtdp_bridge_intake_full_waits_total", ())] == 3


def test_alert_counters(harness: BridgeHarness, owner: User, hook: WebhookReceiver) -> None:
    """Judged points, transitions and actions by type and outcome move on the bridge's /metrics."""
    harness.settings = harness.settings.replace(webhook_allow_private=True)
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    create_axis(feed, "b")  # no rule: its points are not judged
    check = alerts.Checks(allow_private=True)
    alerts.add_rule(OPERATOR, {"name": "hot", "feed": "f", "axis": "a", "kind": "above", "threshold": 30, "actions": [
        {"type": "webhook", "url": hook.url}, {"type": "mqtt"}, {"type": "email", "to": "me@example.com"}]}, check)
    bridge = harness.start()
    registry = CollectorRegistry()
    registry.register(bridge_collector(bridge))
    before = scrape(registry)
    assert before[("rtdp_alert_points_judged_total", ())] == 0
    assert before[("rtdp_alert_actions_waiting", ())] == 0
    for count, y in enumerate((20, 35, 10), start=1):  # ok, firing, ok: two transitions
        harness.publisher.send("feeds/f/a", json.dumps({"y": y}))  # one at a time: x is the arrival time
        wait_for(lambda: len(harness.points("f", "a")) == count, what=f"{count} points")  # noqa: B023
    harness.publisher.send("feeds/f/b", json.dumps({"y": 99}))
    wait_for(lambda: len(harness.points("f", "b")) == 1, what="the point on b")
    hook.wait(2)

    def action(kind: str, outcome: str, values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return values[("rtdp_alert_actions_total", (("outcome", outcome), ("type", kind)))]

    # RTDP_SMTP_URL is not set here: each e-mail counts as failed.
    wait_for(lambda: action("email", "failed", scrape(registry)) == 2, what="the e-mail actions counted")
    after = scrape(registry)
    assert after[("rtdp_alert_rules", ())] == 1
    assert after[("rtdp_alert_points_judged_total", ())] == 3
    assert after[("rtdp_alert_transitions_total", (("by", "point"),))] == 2
    assert after[("rtdp_alert_transitions_total", (("by", "time"),))] == 0
    assert (action("webhook", "sent", after), action("webhook", "failed", after), action("mqtt", "sent", after)) == (
        2, 0, 2)
    assert after[("rtdp_alert_actions_queued_total", ())] == 2
    assert after[("rtdp_alert_actions_dropped_total", ())] == 0
    assert after[("rtdp_alert_actions_waiting", ())] == 0
