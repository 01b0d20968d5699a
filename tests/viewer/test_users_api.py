"""The users API (viewer.users_api) in-process: administrators only."""

from __future__ import annotations

from starlette.testclient import TestClient

from rtdp.models import Feed
from tests.viewer.conftest import World, basic, bearer

ADMIN = basic("admin@nothing.com", "secret-admin")
EP = basic("ep@nothing.com", "1234")


def test_an_admin_lists_disables_resets_and_removes(client: TestClient, world: World) -> None:
    listed = client.get("/api/v1/users", headers=ADMIN).json()["users"]
    assert [(u["email"], u["admin"], u["active"], u["feeds"]) for u in listed] == [
        ("admin@nothing.com", True, True, 0), ("ap@nothing.com", False, True, 1), ("ep@nothing.com", False, True, 2)
    ]
    assert client.get("/api/v1/feeds/feed_a", headers=bearer(world.ep_token)).status_code == 200
    disabled = client.patch("/api/v1/users/ep@nothing.com", json={"active": False}, headers=ADMIN)
    assert disabled.json()["active"] is False
    # At once, though the viewer had the token's login cached.
    assert client.get("/api/v1/feeds/feed_a", headers=bearer(world.ep_token)).status_code == 401
    client.patch("/api/v1/users/ep@nothing.com", json={"active": True, "password": "a-long-password"}, headers=ADMIN)
    assert client.get("/api/v1/feeds/feed_a", headers=EP).status_code == 401  # the old password
    assert client.get("/api/v1/feeds/feed_a", headers=basic("ep@nothing.com", "a-long-password")).status_code == 200
    assert client.patch("/api/v1/users/ap@nothing.com", json={"admin": True}, headers=ADMIN).json()["admin"] is True

    removed = client.delete("/api/v1/users/ep@nothing.com", params={"feeds_to": "ap@nothing.com"}, headers=ADMIN)
    assert removed.json() == {"removed": "ep@nothing.com", "feeds_deleted": [], "feeds_given": ["feed_a", "feed_t"],
                              "given_to": "ap@nothing.com"}
    gone = client.delete("/api/v1/users/ap@nothing.com", headers=ADMIN)
    assert gone.json()["feeds_deleted"] == ["feed_a", "feed_ap", "feed_t"] and Feed.select().count() == 0


def test_refusals(client: TestClient, world: World) -> None:
    assert client.get("/api/v1/users").status_code == 401
    assert client.get("/api/v1/users", headers=EP).status_code == 403
    assert client.patch("/api/v1/users/ap@nothing.com", json={"admin": True}, headers=EP).status_code == 403
    for body in ({"password": "1234"}, {"admin": "yes"}, {"role": "x"}, {}, {"password": 5}):
        assert client.patch("/api/v1/users/ap@nothing.com", json=body, headers=ADMIN).status_code == 400, body
    assert client.patch("/api/v1/users/nobody@x.org", json={"admin": True}, headers=ADMIN).status_code == 404
    assert client.patch("/api/v1/users/admin@nothing.com", json={"active": False}, headers=ADMIN).status_code == 409
    assert client.delete("/api/v1/users/admin@nothing.com", headers=ADMIN).status_code == 409
    assert client.get("/api/v1/users", headers=bearer(world.admin_token)).status_code == 200
