"""The sharing API (viewer.sharing_api) in-process, against a private Mosquitto."""

from __future__ import annotations

from starlette.testclient import TestClient

from rtdp.models import MAX_ID
from tests.viewer.conftest import World, basic, bearer

EP = basic("ep@nothing.com", "1234")
AP = basic("ap@nothing.com", "1234")
SHARES = "/api/v1/feeds/feed_a/shares"
INGEST = "/service/feed_input.json/feed_a/axis_a00?x=1&y=1"


def test_the_owner_shares_lists_and_removes(client: TestClient, world: World) -> None:
    assert client.get(SHARES, headers=EP).json() == {
        "feed": "feed_a", "owner": "ep@nothing.com", "public": False, "shares": []
    }
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 403
    added = client.post(SHARES, json={"user": "ap@nothing.com"}, headers=EP)
    assert added.status_code == 201, added.text
    share = added.json()
    assert share == {"id": share["id"], "feed": "feed_a", "user": "ap@nothing.com", "group": None, "access": "read"}
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 200
    assert client.get(INGEST, headers=AP).status_code == 403  # read only
    changed = client.post(SHARES, json={"user": "ap@nothing.com", "access": "write"}, headers=EP)
    assert changed.json()["id"] == share["id"]
    assert client.get(SHARES, headers=EP).json()["shares"] == [{**share, "access": "write"}]
    # The viewer caches the write decision; removing the share must end it at once.
    assert client.get(INGEST, headers=AP).status_code == 200
    assert client.delete(f"{SHARES}/{share['id']}", headers=EP).status_code == 204
    assert client.get(INGEST, headers=AP).status_code == 403
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 403
    assert client.delete(f"{SHARES}/{share['id']}", headers=EP).status_code == 404
    assert client.delete(f"{SHARES}/{MAX_ID + 1}", headers=EP).status_code == 404


def test_who_may_share(client: TestClient, world: World) -> None:
    anonymous = client.get(SHARES)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    # Another user, and a reader through a share, may not manage it.
    assert client.post(SHARES, json={"user": "ap@nothing.com"}, headers=AP).status_code == 403
    client.post(SHARES, json={"user": "ap@nothing.com", "access": "write"}, headers=EP)
    assert client.get(SHARES, headers=AP).status_code == 403
    assert client.post(SHARES, json={"user": "ap@nothing.com"}, headers=bearer(world.ap_token)).status_code == 403
    # Tokens: one limited to a feed or to reading may not share; a full token and an admin may.
    assert client.get("/api/v1/feeds/feed_t/shares", headers=bearer(world.ep_other_feed_token)).status_code == 403
    assert client.get(SHARES, headers=bearer(world.ep_read_token)).status_code == 403
    assert client.get(SHARES, headers=bearer(world.ep_token)).status_code == 200
    assert client.get(SHARES, headers=bearer(world.admin_token)).status_code == 200


def test_bad_requests_are_4xx_naming_the_problem(client: TestClient, world: World) -> None:
    for body, status in (
        ({"user": "nobody@x.org"}, 404),
        ({"group": "nogroup"}, 404),
        ({"user": "ep@nothing.com"}, 400),
        ({"user": "ap@nothing.com", "access": "all"}, 400),
        ({"user": "ap@nothing.com", "access": 1}, 400),
        ({"user": 5}, 400),
        ({"user": "ap@nothing.com", "role": "x"}, 400),
        ({}, 400),
        ([], 400),
    ):
        response = client.post(SHARES, json=body, headers=EP)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]
    assert client.post("/api/v1/feeds/missing/shares", json={"user": "ap@nothing.com"}, headers=EP).status_code == 404


def test_public_on_and_off_takes_effect_at_once(client: TestClient, world: World) -> None:
    assert client.get("/api/v1/feeds/feed_a").status_code == 401
    assert client.patch("/api/v1/feeds/feed_a", json={"public": True}, headers=EP).json()["public"] is True
    assert client.get("/api/v1/feeds/feed_a").status_code == 200
    assert client.get(SHARES, headers=EP).json()["public"] is True
    assert client.patch("/api/v1/feeds/feed_a", json={"public": False}, headers=EP).json()["public"] is False
    assert client.get("/api/v1/feeds/feed_a").status_code == 401


def test_transfer_of_ownership(client: TestClient, world: World) -> None:
    assert client.put("/api/v1/feeds/feed_a/owner", json={"owner": "nobody@x.org"}, headers=EP).status_code == 404
    assert client.put("/api/v1/feeds/feed_a/owner", json={"name": "x"}, headers=EP).status_code == 400
    given = client.put("/api/v1/feeds/feed_a/owner", json={"owner": "ap@nothing.com"}, headers=EP)
    assert given.json() == {"feed": "feed_a", "owner": "ap@nothing.com"}
    listed = client.get(SHARES, headers=AP).json()
    # ep keeps writing through a share, and may no longer manage the feed.
    assert listed["owner"] == "ap@nothing.com"
    assert [(s["user"], s["access"]) for s in listed["shares"]] == [("ep@nothing.com", "write")]
    assert client.get(INGEST, headers=EP).status_code == 200
    assert client.get(SHARES, headers=EP).status_code == 403
