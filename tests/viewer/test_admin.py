"""/admin and /admin/stream: admins only; the numbers come from the database and the app's registry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import peewee as pw
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.testclient import TestClient

from bridge.metrics import bridge_collector
from bridge.service import Bridge
from broker.metrics import BrokerCollector
from rtdp.accounts import ServiceAccount
from rtdp.codec import Sample
from rtdp.models import Axis, Rejection
from rtdp.settings import Settings
from rtdp.store import write_points
from tests.support.embedded import running_embedded_broker
from tests.support.env import wait_for
from tests.viewer.conftest import LiveServer, World, bearer, make_world, ready
from tests.viewer.test_pages import CSRF_RE, login
from viewer.app import create_app
from viewer.pages.admin import HISTORY_MINUTES, AxisRates


def test_anonymous_is_sent_to_login_and_non_admins_get_403(client: TestClient, world: World) -> None:
    answer = client.get("/admin", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=%2Fadmin")
    assert client.get("/admin/stream").status_code == 401
    login(client, "ep@nothing.com", "1234")
    refused = client.get("/admin")
    assert refused.status_code == 403 and "administrators" in refused.text
    assert client.get("/admin/stream").status_code == 403
    assert 'href="/admin"' not in client.get("/").text  # not in ep's navigation


def test_admin_sees_feeds_counts_rejections_and_system_numbers(client: TestClient, world: World) -> None:
    axis = Axis.get(Axis.feed == world.feed_a.id)
    write_points([(axis.id, Sample(float(i), float(i))) for i in range(3)], received_at=time.time())
    Rejection.create(feed="feed_a", axis="axis_a00", reason="y: not an integer: '3.5'")
    login(client, "admin@nothing.com", "secret-admin")
    assert 'href="/admin"' in client.get("/").text
    page = client.get("/admin")
    assert page.status_code == 200
    config = json.loads(page.text.split('id="page-config">', 1)[1].split("</script>", 1)[0])
    data = config["snapshot"]
    feeds = {feed["feed"]: feed for feed in data["feeds"]}
    assert set(feeds) == {"feed_a", "feed_t", "feed_ap"}
    assert feeds["feed_a"]["owner"] == "ep@nothing.com"
    (row,) = feeds["feed_a"]["axes"]
    assert row["points"] == 3 and row["rejected"] == 1 and row["last_seen"] is not None
    assert len(row["history"]) == HISTORY_MINUTES
    assert data["rejections"][0]["reason"] == "y: not an integer: '3.5'"
    assert "not an integer" in page.text and "ep@nothing.com" in page.text
    system = data["system"]
    assert system["sse_clients"] == 0 and system["database_bytes"] > 0
    # `rtdp viewer` alone: no broker or bridge collectors, and the page says so.
    assert system["broker_clients"] is None and system["points_per_s"] is None
    assert not system["in_process"]["broker"] and "not in this process" in page.text


def test_extra_collectors_feed_the_system_panel(settings: Settings) -> None:
    class Fake:
        def collect(self) -> list[Metric]:
            clients = GaugeMetricFamily("rtdp_broker_clients_connected", "x", value=4)
            lag = GaugeMetricFamily("rtdp_bridge_lag_seconds", "x", value=0.25)
            points = CounterMetricFamily("rtdp_bridge_points", "x", labels=["outcome"])
            points.add_metric(["stored"], 10)
            return [clients, lag, points]

    with TestClient(create_app(settings, collectors=[Fake()])) as client:
        make_world()
        assert "rtdp_broker_clients_connected 4.0" in client.get("/metrics").text
        login(client, "admin@nothing.com", "secret-admin")
        page = client.get("/admin")
        data = json.loads(page.text.split('id="page-config">', 1)[1].split("</script>", 1)[0])["snapshot"]
    assert data["system"]["broker_clients"] == 4 and data["system"]["bridge_lag_s"] == 0.25
    assert data["system"]["in_process"]["broker"] and data["system"]["in_process"]["bridge"]


def test_rates_come_from_point_count_samples() -> None:
    rates = AxisRates()
    rates.add(1000.0, {1: 100})
    assert rates.per_minute(1, 100, 1000.5) is None  # not a second apart yet
    rates.add(1030.0, {1: 130})
    assert rates.per_minute(1, 160, 1060.0) == 60.0  # 60 points in the last 60 s
    assert rates.per_minute(2, 5, 1060.0) is None  # an axis born since
    rates.add(1090.0, {1: 100})  # a purge lowered the count: not a negative rate
    history = rates.history(1)
    assert len(history) == HISTORY_MINUTES and history[-1] == 0 and history[-2] == 60.0


def test_the_stream_sends_snapshots_to_admins(live_server: LiveServer, live_world: World) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        token = CSRF_RE.search(http.get("/login").text).group(1)  # type: ignore[union-attr]
        http.post("/login", data={"email": "admin@nothing.com", "password": "secret-admin", "csrf_token": token})
        events: list[dict[str, Any]] = []
        with http.stream("GET", "/admin/stream") as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 2:
                        break
    first, second = events
    assert {feed["feed"] for feed in first["feeds"]} == {"feed_a", "feed_t", "feed_ap"}
    assert float(second["at"]) > float(first["at"])


def test_serve_composition_shows_broker_and_bridge_numbers(tmp_path: Path, sqlite_db: pw.Database) -> None:
    """What `rtdp serve` wires: the bridge's and the broker's collectors on the viewer's registry."""
    service = ServiceAccount.load_or_create(tmp_path / "data")
    base = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'rtdp.sqlite3'}")
    world = make_world()
    with running_embedded_broker(base, service) as broker:
        settings = base.replace(mqtt=broker.address)
        bridge = Bridge(settings, broker.service_endpoint(), service.client_id("bridge"), sqlite_db)
        collectors = [bridge_collector(bridge), BrokerCollector(broker.broker)]
        with TestClient(create_app(settings, service=service, collectors=collectors)) as client:
            bridge.start()
            try:
                wait_for(lambda: ready(client) and bridge.ready.is_set(), what="viewer and bridge connected")
                answer = client.get("/service/feed_input.json/feed_t/temp?y=1", headers=bearer(world.ep_token))
                assert answer.status_code == 200, answer.text
                wait_for(
                    lambda: 'rtdp_bridge_points_total{outcome="stored"} 1.0' in client.get("/metrics").text,
                    what="the point counted by the bridge",
                )
                text = client.get("/metrics").text
                assert "rtdp_broker_clients_connected 2.0" in text  # the viewer and the bridge
                assert "rtdp_http_ingest_points_total 1.0" in text
                login(client, "admin@nothing.com", "secret-admin")
                page = client.get("/admin")
                data = json.loads(page.text.split('id="page-config">', 1)[1].split("</script>", 1)[0])["snapshot"]
            finally:
                bridge.stop(timeout=10)
    system = data["system"]
    assert system["broker_clients"] == 2 and system["bridge_lag_s"] == 0 and system["batch_points"] == 1
    assert "not in this process" not in page.text


def test_admin_shows_what_retention_removed(client: TestClient, world: World) -> None:
    from rtdp.models import Feed
    from rtdp.retention import purge

    axis = Axis.get(Axis.feed == world.feed_a.id)
    write_points([(axis.id, Sample(float(i), float(i))) for i in range(5)], received_at=time.time())
    Feed.update(retention_points=2).where(Feed.id == world.feed_a.id).execute()
    assert purge(time.time()).removed == 3
    login(client, "admin@nothing.com", "secret-admin")
    page = client.get("/admin")
    config = json.loads(page.text.split('id="page-config">', 1)[1].split("</script>", 1)[0])
    (logged,) = config["snapshot"]["purges"]
    assert (logged["feed"], logged["axis"], logged["removed"]) == ("feed_a", "axis_a00", 3)
    assert "Removed by retention" in page.text
