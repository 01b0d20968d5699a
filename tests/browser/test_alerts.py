"""Alerts in a real browser: a rule made on the feed page fires on a point published over MQTT, and the
notification arrives over the graph page's SSE stream; /alerts updates live and acknowledges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from bridge.service import Bridge
from rtdp.accounts import create_user
from rtdp.models import AlertEvent, User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed
from tests.browser.test_pages import publish, sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

# Records what the page hands to the browser's Notification API (the notification itself is the OS's).
SPY = """
window.__notes = [];
const Real = window.Notification;
if (Real) {
  class Spy extends Real {
    constructor(title, options) { super(title, options); window.__notes.push({title: title, body: options.body}); }
  }
  window.Notification = Spy;
}
"""


def test_a_rule_notifies_the_open_page(live_server: LiveServer, settings: Settings, bridge: Bridge,
                                       browser: Browser, tmp_path: Path) -> None:
    base = live_server.url
    create_user("ep@nothing.com", "a-long-password")
    feed = create_feed("lab", User.get(User.email == "ep@nothing.com"))
    create_axis(feed, "temp")
    context = browser.new_context(viewport={"width": 1100, "height": 720}, permissions=["notifications"])
    context.grant_permissions(["notifications"], origin=base)
    context.add_init_script(SPY)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(tab, base, "ep@nothing.com", "a-long-password")
        tab.goto(f"{base}/feeds/lab")
        form = tab.locator("#alert-form")
        form.locator('input[name="name"]').fill("hot")
        form.locator('select[name="kind"]').select_option("above")
        form.locator('input[name="threshold"]').fill("30")
        form.locator('select[name="severity"]').select_option("critical")
        form.locator('button[type="submit"]').click()
        tab.wait_for_url(f"{base}/feeds/lab#alerts")
        expect(tab.locator("table.alert-rules")).to_contain_text("above 30")

        tab.goto(f"{base}/feeds/lab/graph")
        expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)
        publish(settings, [("feeds/lab/temp", json.dumps({"y": 35}))])
        tab.wait_for_function("() => window.__notes.length >= 1", timeout=15000)
        assert tab.evaluate("() => window.__notes[0]") == {"title": "hot is firing", "body": "lab/temp = 35"}
        expect(tab.locator("#alert-notes")).to_contain_text("hot is firing")
        expect(tab.locator("#alerts-firing")).to_have_text("1")

        tab.goto(f"{base}/alerts")
        expect(tab.locator("#firing-list")).to_contain_text("hot")
        tab.wait_for_function("() => Number(document.documentElement.dataset.alertStreams || 0) >= 1",
                              timeout=15000)
        publish(settings, [("feeds/lab/temp", json.dumps({"y": 20}))])
        expect(tab.locator("#firing-list")).to_contain_text("Nothing is firing", timeout=15000)
        expect(tab.locator("#events-table tbody tr").first).to_contain_text("ok")
        expect(tab.locator("#alerts-firing")).to_have_text("0")
        tab.locator("#events-table form.ack button").first.click()
        tab.wait_for_url(f"{base}/alerts#events")
        expect(tab.locator("#events-table")).to_contain_text("acknowledged by ep@nothing.com")
        assert AlertEvent.get(AlertEvent.state == "firing").acknowledged
        tab.locator("main").screenshot(path=str(tmp_path / "alerts.png"))
        assert errors == []
    finally:
        context.close()
