"""The /groups page in a real browser: an admin creates a group, adds and removes a member, removes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from rtdp.accounts import create_user
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


def test_groups_page(live_server: LiveServer, page: tuple[Page, ConsoleErrors], tmp_path: Path) -> None:
    tab, errors = page
    base = live_server.url
    create_user("root@example.com", "a-long-password", admin=True)
    create_user("friend@example.com", "another-password")
    sign_in(tab, base, "root@example.com", "a-long-password")
    tab.click('header.site nav a[href="/groups"]')
    tab.wait_for_url(f"{base}/groups")
    expect(tab.locator("#no-groups")).to_be_visible()

    tab.fill('#create-group input[name="name"]', "lab-team")
    tab.fill('#create-group input[name="description"]', "people in the lab")
    tab.click('#create-group button[type="submit"]')
    row = tab.locator('#groups tr[data-group="lab-team"]')
    expect(row).to_contain_text("people in the lab")
    expect(row).to_contain_text("no members")

    row.locator('input[name="user"]').fill("friend@example.com")
    row.locator('form.add-member button[type="submit"]').click()
    expect(row.locator('li[data-member="friend@example.com"]')).to_be_visible()
    tab.locator("main").screenshot(path=str(tmp_path / "groups.png"))

    row.locator("form.remove-member button").click()
    expect(row).to_contain_text("no members")
    tab.once("dialog", lambda dialog: dialog.accept())
    row.locator("form.delete-group button").click()
    expect(tab.locator("#no-groups")).to_be_visible()
    assert errors == []
