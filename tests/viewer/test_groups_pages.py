"""The /groups page (viewer.pages.groups) in-process: forms without JavaScript."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient

from rtdp.models import Group, Membership
from tests.viewer.conftest import World
from tests.viewer.test_pages import csrf, login


def post(client: TestClient, path: str, **data: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf(client, "/groups")}, follow_redirects=False)


def test_an_admin_creates_a_group_and_chooses_its_members(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    assert "No groups yet." in client.get("/groups").text
    answer = post(client, "/groups", name="lab", description="the lab")
    assert answer.status_code == 303 and answer.headers["location"] == "/groups#group-lab"
    assert post(client, "/groups/lab/members", user="ap@nothing.com").status_code == 303
    page = client.get("/groups").text
    assert 'data-member="ap@nothing.com"' in page and "the lab" in page
    assert post(client, "/groups/lab/members/remove", user="ap@nothing.com").status_code == 303
    assert Membership.select().count() == 0
    assert post(client, "/groups/lab/delete").status_code == 303
    assert Group.select().count() == 0


def test_mistakes_show_at_their_field(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    post(client, "/groups", name="lab")
    again = post(client, "/groups", name="lab")
    assert again.status_code == 409 and 'id="create-group-name-error"' in again.text
    bad = post(client, "/groups", name="a b")
    assert bad.status_code == 400 and 'id="create-group-name-error"' in bad.text and 'value="a b"' in bad.text
    nobody = post(client, "/groups/lab/members", user="nobody@x.org")
    assert nobody.status_code == 404 and 'id="add-member-lab-user-error"' in nobody.text


def test_users_see_names_and_their_own_groups_and_change_nothing(client: TestClient, world: World) -> None:
    Membership.create(user=world.ap, group=Group.create(name="lab"))
    Group.create(name="ops")
    login(client, "ap@nothing.com", "1234")
    page = client.get("/groups").text
    assert 'data-member="ap@nothing.com"' in page and "not a member" in page and "New group" not in page
    assert post(client, "/groups", name="mine").status_code == 403
    assert post(client, "/groups/lab/members", user="ep@nothing.com").status_code == 403
    assert Group.select().count() == 2 and Membership.select().count() == 1
    client.cookies.clear()
    assert client.get("/groups", follow_redirects=False).headers["location"].startswith("/login")
