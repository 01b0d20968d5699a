"""The feed page's Sharing section in a real browser: share, remove, public on and off, transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from rtdp.accounts import create_user
from rtdp.models import Feed, Group, Membership
from rtdp.store import create_axis, create_feed
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


def test_sharing_section(live_server: LiveServer, page: tuple[Page, ConsoleErrors], tmp_path: Path) -> None:
    tab, errors = page
    base = live_server.url
    owner = create_user("owner@example.com", "a-long-password")
    friend = create_user("friend@example.com", "another-password")
    Membership.create(user=friend, group=Group.create(name="lab-team"))
    create_axis(create_feed("lab", owner), "temp")
    sign_in(tab, base, "owner@example.com", "a-long-password")
    tab.goto(f"{base}/feeds/lab")
    expect(tab.locator("#no-shares")).to_be_visible()

    tab.fill('#add-share input[name="grantee"]', "friend@example.com")
    tab.select_option('#add-share select[name="access"]', "write")
    tab.click('#add-share button[type="submit"]')
    expect(tab.locator("#shares")).to_contain_text("friend@example.com")
    expect(tab.locator("#shares")).to_contain_text("read and write")
    tab.select_option('#add-share select[name="kind"]', "group")
    tab.fill('#add-share input[name="grantee"]', "lab-team")
    tab.click('#add-share button[type="submit"]')
    expect(tab.locator("#shares tbody tr")).to_have_count(2)

    # A mistake is shown at its field, and what was typed stays.
    tab.select_option('#add-share select[name="kind"]', "user")
    tab.fill('#add-share input[name="grantee"]', "nobody@example.com")
    tab.click('#add-share button[type="submit"]')
    expect(tab.locator("#add-share-grantee-error")).to_contain_text("no user with email")
    expect(tab.locator('#add-share input[name="grantee"]')).to_have_value("nobody@example.com")

    tab.click("#public-form button")
    expect(tab.locator("#public-form")).to_contain_text("public")
    expect(tab.locator("#public-form button")).to_have_text("Make private")
    tab.locator("main").screenshot(path=str(tmp_path / "sharing.png"))

    tab.locator('#shares tr:has-text("lab-team") button').click()
    expect(tab.locator("#shares tbody tr")).to_have_count(1)

    # Giving the feed away asks first; then the section is the new owner's.
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.fill('#transfer-feed input[name="owner"]', "friend@example.com")
    tab.click('#transfer-feed button[type="submit"]')
    expect(tab.locator("#sharing")).to_have_count(0)
    assert Feed.get(Feed.name == "lab").owner_id == friend.id
    # The refused share answered 404 with the page (the browser logs that status); nothing else went wrong.
    assert [e for e in errors if "404" not in e or "/feeds/lab/shares" not in e] == []
