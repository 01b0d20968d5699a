"""The groups API (viewer.groups_api) in-process."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.viewer.conftest import World, basic, bearer

ADMIN = basic("admin@nothing.com", "secret-admin")
EP = basic("ep@nothing.com", "1234")
AP = basic("ap@nothing.com", "1234")


def test_admins_manage_groups_and_members_read_what_is_shared_with_them(client: TestClient, world: World) -> None:
    created = client.post("/api/v1/groups", json={"name": "lab", "description": "the lab"}, headers=ADMIN)
    assert created.status_code == 201 and created.json() == {"name": "lab", "description": "the lab", "members": []}
    assert client.post("/api/v1/feeds/feed_a/shares", json={"group": "lab"}, headers=EP).status_code == 201
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 403

    added = client.post("/api/v1/groups/lab/members", json={"user": "ap@nothing.com"}, headers=ADMIN)
    assert added.status_code == 201 and added.json()["members"] == ["ap@nothing.com"]
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 200
    # Everyone signed in sees the names; members only of their own groups.
    assert client.get("/api/v1/groups", headers=EP).json() == {
        "groups": [{"name": "lab", "description": "the lab", "members": None}]
    }
    assert client.get("/api/v1/groups", headers=AP).json()["groups"][0]["members"] == ["ap@nothing.com"]

    assert client.delete("/api/v1/groups/lab/members/ap@nothing.com", headers=ADMIN).status_code == 204
    assert client.get("/api/v1/feeds/feed_a", headers=AP).status_code == 403
    assert client.delete("/api/v1/groups/lab/members/ap@nothing.com", headers=ADMIN).status_code == 404
    assert client.delete("/api/v1/groups/lab", headers=ADMIN).status_code == 204
    assert client.get("/api/v1/feeds/feed_a/shares", headers=EP).json()["shares"] == []


def test_only_admins_change_groups(client: TestClient, world: World) -> None:
    assert client.get("/api/v1/groups").status_code == 401
    assert client.post("/api/v1/groups", json={"name": "mine"}, headers=EP).status_code == 403
    assert client.post("/api/v1/groups", json={"name": "lab"}, headers=bearer(world.admin_token)).status_code == 201
    assert client.post("/api/v1/groups/lab/members", json={"user": "ep@nothing.com"}, headers=EP).status_code == 403
    assert client.delete("/api/v1/groups/lab", headers=EP).status_code == 403
    for body, status in (({"name": "lab"}, 409), ({"name": "a/b"}, 400), ({"name": 3}, 400), ({}, 400),
                         ({"name": "x", "owner": "y"}, 400)):
        assert client.post("/api/v1/groups", json=body, headers=ADMIN).status_code == status, body
    assert client.post("/api/v1/groups/nope/members", json={"user": "ep@nothing.com"}, headers=ADMIN).status_code == 404
    assert client.post("/api/v1/groups/lab/members", json={"user": "no@x.org"}, headers=ADMIN).status_code == 404
