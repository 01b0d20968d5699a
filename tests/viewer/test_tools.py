"""/tools: admins switch every emulator source, feed owners only theirs; switches persist and need CSRF."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from rtdp.emulation import source_feeds, statuses
from rtdp.store import create_feed
from tests.viewer.conftest import World
from tests.viewer.test_pages import CSRF_RE, login


def enabled(source: str) -> bool:
    return next(status.enabled for status in statuses() if status.source == source)


def token_on(client: TestClient, path: str = "/tools") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match
    return match.group(1)


def test_anonymous_goes_to_login_and_strangers_get_403(client: TestClient, world: World) -> None:
    answer = client.get("/tools", follow_redirects=False)
    assert answer.status_code == 303 and "/login" in answer.headers["location"]
    login(client, "ap@nothing.com", "1234")
    assert client.get("/tools").status_code == 403
    assert 'href="/tools"' not in client.get("/").text


def test_admin_switches_a_source_off_and_on(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    assert 'href="/tools"' in client.get("/").text
    page = client.get("/tools")
    assert page.status_code == 200 and len(re.findall(r'action="/tools/', page.text)) == len(source_feeds())
    assert enabled("sine")
    answer = client.post("/tools/sine", data={"enabled": "off", "csrf_token": token_on(client)}, follow_redirects=False)
    assert answer.status_code == 303 and not enabled("sine")
    assert 'data-source="sine" data-enabled="off"' in client.get("/tools").text
    answer = client.post(
        "/tools/sine", data={"enabled": "on"}, headers={"Accept": "application/json", "X-CSRF-Token": token_on(client)}
    )
    assert answer.json() == {"source": "sine", "enabled": True} and enabled("sine")
    assert client.post("/tools/nope", data={"enabled": "on", "csrf_token": token_on(client)}).status_code == 404
    assert client.post("/tools/sine", data={"enabled": "maybe", "csrf_token": token_on(client)}).status_code == 400


def test_switching_needs_the_csrf_token(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    assert client.post("/tools/sine", data={"enabled": "off"}).status_code == 403
    assert client.post("/tools/sine", data={"enabled": "off", "csrf_token": "forged"}).status_code == 403
    assert enabled("sine")


def test_owner_switches_only_the_sources_of_their_feeds(client: TestClient, world: World) -> None:
    create_feed(source_feeds()["door"] or "front_door", world.ep, y_cast="bool")
    login(client, "ep@nothing.com", "1234")
    assert 'href="/tools"' in client.get("/").text
    page = client.get("/tools")
    assert page.status_code == 200 and re.findall(r'action="/tools/([^"]+)"', page.text) == ["door"]
    token = token_on(client)
    assert client.post("/tools/door", data={"enabled": "off", "csrf_token": token}).status_code == 200
    assert not enabled("door")
    refused = client.post("/tools/sine", data={"enabled": "off", "csrf_token": token})
    assert refused.status_code == 403 and enabled("sine")
