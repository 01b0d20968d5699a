"""`/api/v1/dashboards`: the issue's shape, validation naming the field, who may see and change what."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from rtdp.models import Dashboard, DashboardShare, Group, Membership
from rtdp.store import create_axis
from tests.viewer.conftest import World, basic, bearer

EP = basic("ep@nothing.com", "1234")
AP = basic("ap@nothing.com", "1234")


def home(feed: str = "feed_t", axis: str = "temp") -> dict[str, Any]:
    one = {"feed": feed, "axis": axis}
    return {
        "name": "Home",
        "widgets": [
            {"type": "chart", "series": [one]},
            {"type": "value", "title": "Kitchen", **one},
            {"type": "gauge", **one, "min": -10, "max": 40, "thresholds": [25, 30]},
            {"type": "state", **one, "on": "open", "off": "closed"},
            {"type": "table", "series": [one]},
        ],
    }


def test_create_read_update_delete(client: TestClient, world: World) -> None:
    created = client.post("/api/v1/dashboards", json=home(), headers=EP)
    assert created.status_code == 201, created.text
    body = created.json()
    assert len(body["id"]) >= 16 and body["name"] == "Home" and body["editable"] is True
    assert [w["type"] for w in body["widgets"]] == ["chart", "value", "gauge", "state", "table"]
    # Defaults are filled in: sizes, labels, the range.
    assert body["widgets"][1] == {"type": "value", "title": "Kitchen", "w": 3, "h": 1, "feed": "feed_t", "axis": "temp"}
    assert body["range"] == 3600 and body["public"] is False and body["shares"] == []
    dashboard_id = body["id"]
    assert client.get(f"/api/v1/dashboards/{dashboard_id}", headers=EP).json() == body
    listed = client.get("/api/v1/dashboards", headers=EP).json()["dashboards"]
    assert [d["id"] for d in listed] == [dashboard_id]

    changed = client.patch(f"/api/v1/dashboards/{dashboard_id}", json={"name": "Kitchen", "range": 300}, headers=EP)
    assert changed.status_code == 200 and changed.json()["name"] == "Kitchen" and changed.json()["range"] == 300
    assert client.delete(f"/api/v1/dashboards/{dashboard_id}", headers=EP).status_code == 204
    assert client.get(f"/api/v1/dashboards/{dashboard_id}", headers=EP).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"widgets": []}, 400, "name"),
        ({"name": "  "}, 400, "name"),
        ({"name": "x" * 101}, 400, "name"),
        ({"name": "H", "colour": "red"}, 400, "colour"),
        ({"name": "H", "range": 5}, 400, "range"),
        ({"name": "H", "public": "yes"}, 400, "public"),
        ({"name": "H", "widgets": {}}, 400, "widgets"),
        ({"name": "H", "widgets": [{"type": "pie"}]}, 400, "widgets[0].type"),
        ({"name": "H", "widgets": [{"type": "chart", "series": []}]}, 400, "widgets[0].series"),
        (
            {"name": "H", "widgets": [{"type": "chart", "series": [{"feed": "feed_t"}]}]},
            400,
            "widgets[0].series[0].axis",
        ),
        ({"name": "H", "widgets": [{"type": "value", "feed": "nope", "axis": "a"}]}, 400, "widgets[0].feed"),
        ({"name": "H", "widgets": [{"type": "value", "feed": "feed_t", "axis": "nope"}]}, 400, "widgets[0].axis"),
        ({"name": "H", "widgets": [{"type": "value", "feed": "feed_t", "axis": "temp", "w": 13}]}, 400, "widgets[0].w"),
        (
            {"name": "H", "widgets": [{"type": "gauge", "feed": "feed_t", "axis": "temp", "min": 5, "max": 5}]},
            400,
            "widgets[0].max",
        ),
        (
            {"name": "H", "widgets": [{"type": "gauge", "feed": "feed_t", "axis": "temp", "thresholds": [90, 10]}]},
            400,
            "widgets[0].thresholds",
        ),
        (
            {"name": "H", "widgets": [{"type": "state", "feed": "feed_t", "axis": "temp", "on": ""}]},
            400,
            "widgets[0].on",
        ),
        # ep may not read ap's feed: refused, not stored.
        (
            {"name": "H", "widgets": [{"type": "value", "feed": "feed_ap", "axis": "axis_aj_00"}]},
            403,
            "widgets[0].feed",
        ),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(
    client: TestClient, world: World, body: dict[str, Any], status: int, field: str
) -> None:
    answer = client.post("/api/v1/dashboards", json=body, headers=EP)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["field"] == field
    assert Dashboard.select().count() == 0


def test_bad_patch_changes_nothing(client: TestClient, world: World) -> None:
    dashboard_id = client.post("/api/v1/dashboards", json=home(), headers=EP).json()["id"]
    bad = {"name": "Other", "widgets": [{"type": "value", "feed": "feed_ap", "axis": "axis_aj_00"}]}
    answer = client.patch(f"/api/v1/dashboards/{dashboard_id}", json=bad, headers=EP)
    assert answer.status_code == 403 and answer.json()["field"] == "widgets[0].feed"
    assert Dashboard.get_by_id(dashboard_id).name == "Home"


def test_ap_refused_on_eps_dashboard(client: TestClient, world: World) -> None:
    dashboard_id = client.post("/api/v1/dashboards", json=home(), headers=EP).json()["id"]
    url = f"/api/v1/dashboards/{dashboard_id}"
    assert client.get(url, headers=AP).status_code == 404
    assert client.patch(url, json={"name": "mine"}, headers=AP).status_code == 404
    assert client.delete(url, headers=AP).status_code == 404
    assert client.get(url).status_code == 401
    assert client.get("/api/v1/dashboards", headers=AP).json()["dashboards"] == []
    # Shared read-only: ap sees it but may not change it; the widgets on ep's private feed show nothing of it.
    share = client.post(f"{url}/shares", json={"user": "ap@nothing.com"}, headers=EP)
    assert share.status_code == 201 and share.json()["access"] == "read"
    seen = client.get(url, headers=AP).json()
    assert seen["editable"] is False and seen["shares"] is None
    assert seen["widgets"][0]["series"] == [{"hidden": True}]
    assert "feed" not in seen["widgets"][1] and seen["widgets"][1]["hidden"] is True
    assert seen["widgets"][1]["title"] == ""
    assert "feed_t" not in client.get(url, headers=AP).text
    assert client.patch(url, json={"name": "mine"}, headers=AP).status_code == 403
    assert client.delete(url, headers=AP).status_code == 403
    assert client.post(f"{url}/shares", json={"user": "admin@nothing.com"}, headers=AP).status_code == 403
    assert [d["id"] for d in client.get("/api/v1/dashboards", headers=AP).json()["dashboards"]] == [dashboard_id]
    # Removing the share takes it away again.
    assert client.delete(f"{url}/shares/{share.json()['id']}", headers=EP).status_code == 204
    assert client.get(url, headers=AP).status_code == 404


def test_group_share_and_public_link(client: TestClient, world: World) -> None:
    team = Group.create(name="lab")
    Membership.create(user=world.ap, group=team)
    world.feed_t.public = True
    world.feed_t.save()
    dashboard_id = client.post("/api/v1/dashboards", json=home(), headers=EP).json()["id"]
    url = f"/api/v1/dashboards/{dashboard_id}"
    assert client.post(f"{url}/shares", json={"group": "lab"}, headers=EP).status_code == 201
    assert (
        client.post(f"{url}/shares", json={"group": "lab", "access": "write"}, headers=EP).json()["field"] == "access"
    )
    assert DashboardShare.select().count() == 1
    # A public feed is readable by ap: the widgets show it.
    assert client.get(url, headers=AP).json()["widgets"][1]["feed"] == "feed_t"
    assert client.patch(url, json={"public": True}, headers=EP).json()["public"] is True
    anonymous = client.get(url)
    assert anonymous.status_code == 200 and anonymous.json()["widgets"][0]["series"] == [
        {"feed": "feed_t", "axis": "temp"}
    ]
    assert client.get("/api/v1/dashboards").status_code == 401


def test_tokens(client: TestClient, world: World) -> None:
    # A device's token (one feed) or a read-only one may not create or change dashboards.
    assert client.post("/api/v1/dashboards", json=home(), headers=bearer(world.ep_other_feed_token)).status_code == 403
    assert client.post("/api/v1/dashboards", json=home(), headers=bearer(world.ep_read_token)).status_code == 403
    assert client.post("/api/v1/dashboards", json=home(), headers=bearer(world.ep_token)).status_code == 201
    create_axis(world.feed_a, "second")
    assert (
        client.post("/api/v1/dashboards", json=home("feed_a", "second"), headers=bearer(world.ep_token)).status_code
        == 201
    )


def test_multi_feed_stream_permission(client: TestClient, world: World) -> None:
    assert client.get("/api/v1/stream").json()["field"] == "feed"
    assert client.get("/api/v1/stream?feed=feed_t&feed=feed_ap", headers=EP).status_code == 403
    assert client.get("/api/v1/stream?feed=feed_t&feed=missing", headers=EP).status_code == 404
    assert client.get("/api/v1/stream?feed=feed_t").status_code == 401


def test_removing_a_user_or_group_removes_their_dashboards_and_shares(client: TestClient, world: World) -> None:
    admin = basic("admin@nothing.com", "secret-admin")
    team = Group.create(name="lab")
    eps = client.post("/api/v1/dashboards", json=home(), headers=EP).json()["id"]
    aps = client.post("/api/v1/dashboards", json=home("feed_ap", "axis_aj_00"), headers=AP).json()["id"]
    client.post(f"/api/v1/dashboards/{aps}/shares", json={"user": "ep@nothing.com"}, headers=AP)
    client.post(f"/api/v1/dashboards/{aps}/shares", json={"group": "lab"}, headers=AP)
    assert DashboardShare.select().count() == 2
    assert client.delete(f"/api/v1/groups/{team.name}", headers=admin).status_code == 204
    assert DashboardShare.select().count() == 1
    assert client.delete("/api/v1/users/ep@nothing.com?feeds_to=admin@nothing.com", headers=admin).status_code == 200
    assert [d.id for d in Dashboard.select()] == [aps] and DashboardShare.select().count() == 0
    assert eps not in client.get("/api/v1/dashboards", headers=admin).text
