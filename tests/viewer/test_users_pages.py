"""The /admin/users page (viewer.pages.users) in-process: forms without JavaScript, administrators only."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient

from rtdp.credentials import verify_password
from rtdp.models import Feed, User
from tests.viewer.conftest import World
from tests.viewer.test_pages import csrf, login

PAGE = "/admin/users"


def post(client: TestClient, path: str, **data: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf(client, PAGE)}, follow_redirects=False)


def get(email: str) -> User:
    found: User = User.get(User.email == email)
    return found


def test_an_admin_manages_users_from_the_page(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    page = client.get(PAGE).text
    assert 'data-user="ep@nothing.com"' in page and 'data-user="ap@nothing.com"' in page

    done = post(client, f"{PAGE}/ep@nothing.com", action="active", value="off")
    assert done.status_code == 200 and "ep@nothing.com is disabled." in done.text
    assert not get("ep@nothing.com").is_active
    post(client, f"{PAGE}/ep@nothing.com", action="active", value="on")
    post(client, f"{PAGE}/ap@nothing.com", action="admin", value="on")
    assert get("ep@nothing.com").is_active and get("ap@nothing.com").is_admin
    post(client, f"{PAGE}/ap@nothing.com", action="password", password="a-long-password")
    assert verify_password(get("ap@nothing.com").password_hash, "a-long-password")

    removed = post(client, f"{PAGE}/ep@nothing.com/remove", feeds_to="ap@nothing.com")
    assert "Removed ep@nothing.com: its 2 feeds now belong to ap@nothing.com." in removed.text
    owned = Feed.select().where(Feed.owner == get("ap@nothing.com").id)
    assert {f.name for f in owned} == {"feed_a", "feed_t", "feed_ap"}


def test_refusals_are_shown_on_the_page(client: TestClient, world: World) -> None:
    login(client, "admin@nothing.com", "secret-admin")
    weak = post(client, f"{PAGE}/ap@nothing.com", action="password", password="1234")
    assert weak.status_code == 400 and "at least 8 characters" in weak.text
    self_disable = post(client, f"{PAGE}/admin@nothing.com", action="active", value="off")
    assert self_disable.status_code == 409 and get("admin@nothing.com").is_active
    assert post(client, f"{PAGE}/nobody@x.org/remove").status_code == 404


def test_only_admins(client: TestClient, world: World) -> None:
    assert client.get(PAGE, follow_redirects=False).headers["location"].startswith("/login")
    login(client, "ep@nothing.com", "1234")
    assert client.get(PAGE).status_code == 403
    token = csrf(client, "/")
    answer = client.post(f"{PAGE}/ap@nothing.com", data={"action": "admin", "value": "on", "csrf_token": token})
    assert answer.status_code == 403 and not get("ap@nothing.com").is_admin
