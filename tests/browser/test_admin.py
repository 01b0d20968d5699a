"""The admin dashboard in a real browser: points published over MQTT show up in its table without a reload."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bridge.service import Bridge
from rtdp.accounts import create_user
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import publish, sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


def test_dashboard_updates_live(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    base = live_server.url
    admin = create_user("root@example.com", "a-long-password", admin=True)
    create_axis(create_feed("lab", admin, x_cast="float"), "temp")
    sign_in(tab, base, "root@example.com", "a-long-password")
    tab.click('header.site nav a[href="/admin"]')
    tab.wait_for_url(f"{base}/admin")
    points = tab.locator('#admin-feeds tr[data-feed="lab"][data-axis="temp"] td[data-key="points"]')
    expect(points).to_have_text("0")
    expect(tab.locator("#admin-live")).to_have_text("(live)")
    marker = tab.evaluate("() => (window.dashboardMarker = 'same page')")

    publish(settings, [("feeds/lab/temp", '{"x": 1, "y": 20.5}'), ("feeds/lab/temp", "2,21"),
                       ("feeds/lab/temp", "not a number")])
    expect(points).to_have_text("2", timeout=15_000)
    rejected = tab.locator('#admin-feeds tr[data-feed="lab"][data-axis="temp"] td[data-key="rejected"]')
    expect(rejected).to_have_text("1", timeout=15_000)
    expect(tab.locator("#admin-rejections")).to_contain_text("lab")
    assert tab.evaluate("() => window.dashboardMarker") == marker  # no reload happened
    assert errors == []
