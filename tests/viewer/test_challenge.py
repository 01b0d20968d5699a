"""Without credentials: 401 with WWW-Authenticate for a feed one may not read (clients that answer a
challenge then authenticate), and the public feeds listed."""

from __future__ import annotations

import json
import urllib.request

from starlette.testclient import TestClient

from rtdp.store import create_feed
from tests.viewer.conftest import LiveServer, World

API = "/api/v1/feeds"


def test_private_and_missing_feeds_challenge_public_ones_answer(client: TestClient, world: World) -> None:
    create_feed("open_feed", world.ep, public=True)
    for path in (f"{API}/feed_a", f"{API}/missing", f"{API}/feed_a/axes", f"{API}/feed_a/stream",
                 f"{API}/feed_a/axes/axis_a00/points", f"{API}/feed_a/export"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith('Basic realm="rtdp"'), path
        assert answer.json()["code"] == "unauthenticated"
    assert client.get(f"{API}/open_feed").status_code == 200
    assert [f["name"] for f in client.get(API).json()["feeds"]] == ["open_feed"]


def test_urllib_auth_handler_reads_a_private_feed(live_server: LiveServer, live_world: World) -> None:
    """urllib sends credentials only after a 401 challenge: with a 404 it could never read."""
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, live_server.url, "ep@nothing.com", "1234")
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))
    with opener.open(f"{live_server.url}{API}/feed_a", timeout=10) as response:
        assert json.load(response)["name"] == "feed_a"
