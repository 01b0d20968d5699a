from __future__ import annotations

import socket
from pathlib import Path

import peewee as pw
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from rtdp.accounts import ServiceAccount
from rtdp.errors import ConfigError
from rtdp.models import database_proxy
from rtdp.settings import HostPort, Settings
from tests.support.embedded import running_embedded_broker
from tests.support.env import wait_for
from tests.viewer.conftest import bearer, make_world, ready
from viewer.app import build_server, create_app


def test_port_in_use_is_one_line_naming_http(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(data_dir=tmp_path, http=HostPort("127.0.0.1", port))
        with pytest.raises(ConfigError) as caught:
            build_server(settings, create_app(settings))
    message = str(caught.value)
    assert "--http" in message and str(port) in message and "\n" not in message


def test_two_apps_at_once_have_their_own_metrics(settings: Settings) -> None:
    # Per-app registries: the global prometheus registry would refuse the second app's metrics.
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        wait_for(lambda: ready(first) and ready(second))
        first.get("/service/feed_input.json/f/a?y=1")  # 401, counted by the first app only
        assert 'rtdp_http_ingest_total{outcome="unauthenticated"} 1.0' in first.get("/metrics").text
        assert "unauthenticated" not in second.get("/metrics").text


def test_the_app_uses_the_database_it_is_given(tmp_path: Path, settings: Settings, any_db: pw.Database) -> None:
    """`rtdp serve` opens the database once and hands it over: the lifespan must not open it again."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unopenable = settings.replace(db_url=f"sqlite:///{blocker}/rtdp.sqlite3")  # its directory is a file
    with TestClient(create_app(unopenable, db=any_db)) as client:
        wait_for(lambda: ready(client), what="the viewer to be ready")
        assert client.get("/readyz").json()["database"] is True
    assert database_proxy.obj is any_db, "the models stay bound to the database the process opened"


def test_embedded_broker_with_the_service_account(tmp_path: Path, sqlite_db: object) -> None:
    """`rtdp serve` mode: the viewer logs in to the embedded amqtt broker as the service account."""
    service = ServiceAccount.load_or_create(tmp_path / "data")
    base = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'rtdp.sqlite3'}")
    world = make_world()
    with running_embedded_broker(base, service) as broker:
        settings = base.replace(mqtt=broker.address)
        with TestClient(create_app(settings, service=service)) as client:
            wait_for(lambda: ready(client), what="the viewer to connect to the embedded broker")
            response = client.get("/service/feed_input.json/feed_t/temp?y=1", headers=bearer(world.ep_token))
            assert response.status_code == 200, response.text


def test_the_viewer_and_the_broker_keep_credentials_equally_long(settings: Settings, tmp_path: Path) -> None:
    """One lifetime for a verified login everywhere (settings.credential_ttl): a revocation takes effect
    within the same time on the web and on MQTT."""
    from broker.server import EmbeddedBroker

    broker = EmbeddedBroker(settings, ServiceAccount.load_or_create(tmp_path / "svc"))
    broker.access.close()
    with TestClient(create_app(settings)) as client:
        state = client.app.state.viewer  # type: ignore[attr-defined]
        assert state.credentials.ttl == broker.access.credential_ttl == settings.credential_ttl
        assert state.decisions.ttl == settings.decision_ttl


def test_every_error_on_a_page_path_is_drawn_in_the_sites_layout(settings: Settings) -> None:
    # One renderer for error pages: an unhandled error, a wrong method and a missing page look alike.
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    app = create_app(settings, routes=[Route("/broken", broken), Route("/api/v1/broken", broken)])
    with TestClient(app, raise_server_exceptions=False) as client:
        crash = client.get("/broken")
        assert crash.status_code == 500 and 'class="site"' in crash.text
        assert "internal server error" in crash.text and "boom" not in crash.text
        assert client.get("/api/v1/broken").json() == {"error": "internal server error", "code": "error"}
        wrong = client.post("/account")
        assert wrong.status_code == 405 and 'class="site"' in wrong.text
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
        missing = client.get("/no/such/page")
        assert missing.status_code == 404 and "There is no page at this address." in missing.text
        asked = client.get("/no/such/page", headers={"accept": "application/json"})
        assert asked.json() == {"error": "There is no page at this address.", "code": "not_found"}
