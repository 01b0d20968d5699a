"""The feed page's Sharing section (viewer.pages.sharing) in-process: forms without JavaScript."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient

from rtdp.models import Feed, Group, Membership, Share
from tests.viewer.conftest import World
from tests.viewer.test_pages import csrf, login

PAGE = "/feeds/feed_a"


def post(client: TestClient, path: str, **data: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf(client, PAGE)}, follow_redirects=False)


def test_the_owner_shares_from_the_feed_page(client: TestClient, world: World) -> None:
    Membership.create(user=world.ap, group=Group.create(name="team"))
    login(client, "ep@nothing.com", "1234")
    page = client.get(PAGE).text
    assert 'id="sharing"' in page and "Not shared with anyone." in page and "Make public" in page

    answer = post(client, f"{PAGE}/shares", kind="user", grantee="ap@nothing.com", access="write")
    assert answer.status_code == 303 and answer.headers["location"] == f"{PAGE}#sharing"
    assert post(client, f"{PAGE}/shares", kind="group", grantee="team").status_code == 303
    page = client.get(PAGE).text
    assert "ap@nothing.com" in page and "read and write" in page and "group <strong>team</strong>" in page

    share = Share.get(Share.user == world.ap.id)
    assert post(client, f"{PAGE}/shares/{share.id}/delete").status_code == 303
    assert [s.group.name for s in Share.select()] == ["team"]

    assert post(client, f"{PAGE}/public", public="on").status_code == 303
    assert Feed.get(Feed.name == "feed_a").public and "Make private" in client.get(PAGE).text
    assert post(client, f"{PAGE}/public", public="off").status_code == 303
    assert not Feed.get(Feed.name == "feed_a").public


def test_a_bad_share_shows_the_page_again_with_the_message_at_the_field(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    answer = post(client, f"{PAGE}/shares", kind="user", grantee="nobody@x.org")
    assert answer.status_code == 404
    text = answer.text
    assert 'id="add-share-grantee-error"' in text and "no user with email" in text and 'value="nobody@x.org"' in text
    answer = post(client, f"{PAGE}/owner", owner="nobody@x.org")
    assert 'id="transfer-feed-owner-error"' in answer.text
    assert Share.select().count() == 0


def test_only_managers_see_and_use_the_sharing_section(client: TestClient, world: World) -> None:
    Share.create(feed=world.feed_a, user=world.ap, access="write")
    login(client, "ap@nothing.com", "1234")
    page = client.get(PAGE)
    assert page.status_code == 200 and 'id="sharing"' not in page.text
    answer = post(client, f"{PAGE}/shares", kind="user", grantee="admin@nothing.com")
    assert answer.status_code == 403
    assert post(client, f"{PAGE}/public", public="on").status_code == 403
    assert Share.select().count() == 1 and not Feed.get(Feed.name == "feed_a").public


def test_transfer_from_the_page(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    assert post(client, f"{PAGE}/owner", owner="ap@nothing.com").status_code == 303
    assert Feed.get(Feed.name == "feed_a").owner_id == world.ap.id
    # ep still reads and writes it, but the Sharing section is ap's now.
    assert 'id="sharing"' not in client.get(PAGE).text
