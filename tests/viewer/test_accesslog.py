"""Which requests get a log line: errors by default (repeats rate-limited), every one with `all`, none with `off`."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from rtdp.settings import HostPort, Settings
from tests.support.env import wait_for
from tests.viewer.conftest import World, bearer, make_world, ready
from viewer.app import build_server, create_app

URL = "/service/feed_input.json/feed_a/axis_a00?x=1&y=7"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in ("rtdp.access", "uvicorn.access")]


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[TestClient, World]]:
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: ready(client), what="the viewer to be ready")
        yield client, make_world()


def test_by_default_only_errors_are_logged_and_repeats_rate_limited(
    served: tuple[TestClient, World], caplog: pytest.LogCaptureFixture
) -> None:
    client, world = served
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert client.get(URL, headers=bearer(world.ep_token)).status_code == 200
        assert client.get("/api/v1/feeds", headers=bearer(world.ep_token)).status_code == 200
    assert access_lines(caplog) == []
    # A device stuck on a bad token: one line, not one per request; the Starlette path is logged too.
    for _ in range(5):
        assert client.get(URL, headers=bearer("revoked")).status_code == 401
    assert client.get("/no/such/page").status_code == 404
    lines = access_lines(caplog)
    assert len(lines) == 2, lines
    assert '"GET /service/feed_input.json/feed_a/axis_a00 HTTP/1.1" 401' in lines[0]
    assert '"GET /no/such/page HTTP/1.1" 404' in lines[1]


def test_off_logs_nothing(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings.replace(access_log="off"))) as client:
        assert client.get("/no/such/page").status_code == 404
    assert access_lines(caplog) == []


@pytest.mark.parametrize(("mode", "uvicorn_logs"), [("errors", False), ("all", True), ("off", False)])
def test_uvicorn_logs_every_request_only_in_mode_all(settings: Settings, mode: str, uvicorn_logs: bool) -> None:
    chosen = settings.replace(access_log=mode, http=HostPort("127.0.0.1", 0))
    server = build_server(chosen, create_app(chosen))
    try:
        assert server.config.access_log is uvicorn_logs
    finally:
        server.socket.close()
