"""The dashboard pages in-process: sign-in required, the create form (CSRF, errors at the field), who sees what."""

from __future__ import annotations

from starlette.testclient import TestClient

from rtdp.models import Dashboard
from tests.viewer.conftest import World, basic
from tests.viewer.test_pages import csrf, login

EP = basic("ep@nothing.com", "1234")


def test_list_and_create(client: TestClient, world: World) -> None:
    answer = client.get("/dashboards", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fdashboards"
    login(client, "ep@nothing.com", "1234")
    assert "No dashboards yet" in client.get("/dashboards").text
    # Without the CSRF token nothing is created.
    assert client.post("/dashboards", data={"name": "Home"}, follow_redirects=False).status_code == 403
    bad = client.post("/dashboards", data={"name": " ", "csrf_token": csrf(client, "/dashboards")})
    assert bad.status_code == 400 and 'id="create-dashboard-name-error"' in bad.text
    assert Dashboard.select().count() == 0
    made = client.post("/dashboards", data={"name": "Home", "csrf_token": csrf(client, "/dashboards")},
                       follow_redirects=False)
    assert made.status_code == 303
    board = Dashboard.get()
    assert made.headers["location"] == f"/dashboards/{board.id}?edit=1"
    page = client.get(f"/dashboards/{board.id}?edit=1")
    assert page.status_code == 200 and 'id="editor"' in page.text and "feed_t" in page.text  # the series picker
    assert f'href="/dashboards/{board.id}"' in client.get("/dashboards").text


def test_page_access(client: TestClient, world: World) -> None:
    created = client.post("/api/v1/dashboards", headers=EP, json={
        "name": "Home", "widgets": [{"type": "value", "feed": "feed_t", "axis": "temp"}]})
    url = f"/dashboards/{created.json()['id']}"
    assert client.get(url, follow_redirects=False).headers["location"].startswith("/login?next=")
    login(client, "ap@nothing.com", "1234")
    assert client.get(url).status_code == 404
    assert client.get("/dashboards/nope").status_code == 404
    client.patch(f"/api/v1/dashboards/{created.json()['id']}", headers=EP, json={"public": True})
    shown = client.get(url)
    # ap may not read feed_t: the widget is there, its feed is not, and there is no editor.
    assert shown.status_code == 200 and "feed_t" not in shown.text and 'id="editor"' not in shown.text


def test_the_page_changes_it_through_the_api_with_its_csrf_token(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    created = client.post("/api/v1/dashboards", json={"name": "Home"}, headers={"X-CSRF-Token": csrf(client, "/")})
    assert created.status_code == 201
    url = f"/api/v1/dashboards/{created.json()['id']}"
    # A signed-in browser's cookie alone changes nothing: a link on another site cannot rename it.
    assert client.patch(url, json={"name": "Evil"}).status_code == 403
    assert client.patch(url, json={"name": "Kitchen"}, headers={"X-CSRF-Token": csrf(client, "/")}).status_code == 200
    assert Dashboard.get().name == "Kitchen"
