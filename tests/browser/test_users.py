"""/admin/users in a real browser: disable, enable, make admin, reset a password, remove."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from rtdp.accounts import create_user
from rtdp.models import User
from rtdp.store import create_feed
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


def test_users_page(live_server: LiveServer, page: tuple[Page, ConsoleErrors], tmp_path: Path) -> None:
    tab, errors = page
    base = live_server.url
    create_user("root@example.com", "a-long-password", admin=True)
    create_feed("friends_feed", create_user("friend@example.com", "another-password"))
    sign_in(tab, base, "root@example.com", "a-long-password")
    tab.click('header.site nav a[href="/admin/users"]')
    tab.wait_for_url(f"{base}/admin/users")
    row = tab.locator('#users tr[data-user="friend@example.com"]')
    expect(row.locator("td.state")).to_contain_text("active")

    row.locator("form.set-active button").click()
    expect(row.locator("td.state")).to_contain_text("disabled")
    expect(tab.locator(".notice")).to_have_text("friend@example.com is disabled.")
    row.locator("form.set-active button").click()
    row.locator("form.set-admin button").click()
    expect(row.locator("td.role")).to_contain_text("revoke admin")
    row.locator('form.reset-password input[name="password"]').fill("a-new-long-password")
    row.locator("form.reset-password button").click()
    expect(tab.locator(".notice")).to_contain_text("New password set for friend@example.com")
    tab.locator("main").screenshot(path=str(tmp_path / "users.png"))

    tab.once("dialog", lambda dialog: dialog.accept())
    row.locator('form.remove-user input[name="feeds_to"]').fill("root@example.com")
    row.locator("form.remove-user button").click()
    expect(tab.locator(".notice")).to_contain_text("its 1 feeds now belong to root@example.com")
    expect(row).to_have_count(0)
    assert not User.select().where(User.email == "friend@example.com").exists()
    assert errors == []
