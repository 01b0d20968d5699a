"""Dashboards in a real browser: one widget of each kind made from the page and kept across a reload, live
over one stream; shared read-only with ap; public by link for an anonymous browser; a phone's width;
axe-core finds nothing; no console errors. Screenshots go to the test's tmp_path (1366x800 and 390x844)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from bridge.service import Bridge
from rtdp.codec import Sample
from rtdp.models import Dashboard
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, write_points
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import publish, sign_in
from tests.support.env import wait_for
from tests.viewer.conftest import LiveServer, make_user

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}


def seed() -> None:
    ep = make_user("ep@nothing.com", "1234")
    make_user("ap@nothing.com", "1234")
    now = time.time()
    kitchen = create_feed("kitchen", ep)
    temperature = create_axis(kitchen, "temperature")
    door = create_feed("door", ep, y_cast="bool")
    state = create_axis(door, "state")
    lab = create_feed("lab", ep, public=True)
    t = create_axis(lab, "t")
    write_points([(temperature.id, Sample(now - 600 + i * 10, 20 + (i % 7) * 0.5)) for i in range(60)])
    write_points([(state.id, Sample(now - 60, 1.0))])
    write_points([(t.id, Sample(now - 300 + i * 30, float(i))) for i in range(10)])


def axe_violations(tab: Page) -> list[dict[str, Any]]:
    result: dict[str, Any] = tab.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:3]} for v in result["violations"]]


def new_tab(browser: Browser, errors: ConsoleErrors, viewport: dict[str, int] = DESKTOP) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.add_init_script(path=str(AXE))  # through CDP: the page's CSP does not apply
    tab = context.new_page()
    tab.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return tab


def add_widget(tab: Page, kind: str, series: list[str], **fields: str) -> None:
    tab.select_option('#add-widget select[name="type"]', kind)
    values = [json.dumps({"feed": s.split("/")[0], "axis": s.split("/")[1]}, separators=(",", ":")) for s in series]
    tab.select_option('#add-widget select[name="series"]', values)
    for name, value in fields.items():
        tab.fill(f'#add-widget [name="{name}"]', value)
    count = tab.locator("#grid .widget").count()
    tab.click('#add-widget button[type="submit"]')
    expect(tab.locator("#grid .widget")).to_have_count(count + 1)


def test_dashboard_made_on_the_page_shared_and_public(
    live_server: LiveServer, settings: Settings, bridge: Bridge, browser: Browser, tmp_path: Path
) -> None:
    assert AXE.is_file(), "npm ci (axe-core is a devDependency)"
    base = live_server.url
    seed()
    errors = ConsoleErrors()
    tab = new_tab(browser, errors)
    sign_in(tab, base, "ep@nothing.com", "1234")
    tab.goto(f"{base}/dashboards")
    expect(tab.locator("#no-dashboards")).to_be_visible()
    assert axe_violations(tab) == []
    tab.fill('#create-dashboard input[name="name"]', "Home")
    tab.click('#create-dashboard button[type="submit"]')
    tab.wait_for_url(f"{base}/dashboards/*?edit=1")
    dashboard_id = tab.url.split("/dashboards/")[1].split("?")[0]
    expect(tab.locator("#editor")).to_be_visible()

    add_widget(tab, "chart", ["kitchen/temperature", "lab/t"], title="Temperatures")
    add_widget(tab, "value", ["kitchen/temperature"], title="Kitchen")
    add_widget(tab, "gauge", ["kitchen/temperature"], title="Gauge", min="0", max="40", thresholds="22, 30")
    add_widget(tab, "state", ["door/state"], title="Front door", on="open", off="closed")
    add_widget(tab, "table", ["lab/t"], title="Lab")
    saved = Dashboard.get_by_id(dashboard_id)
    assert [w["type"] for w in json.loads(saved.widgets)] == ["chart", "value", "gauge", "state", "table"]

    # Reloaded (out of edit mode), every widget shows its data.
    tab.goto(f"{base}/dashboards/{dashboard_id}")
    widgets = tab.locator("#grid .widget")
    expect(widgets).to_have_count(5)
    tab.wait_for_function("() => window.rtdpDashReady !== undefined")
    expect(tab.locator("#editor")).to_be_hidden()
    assert int(tab.get_attribute(".widget-chart .plot", "data-points") or 0) == 70
    expect(tab.locator(".widget-value .big-value")).not_to_have_text("–")
    expect(tab.locator(".widget-gauge .gauge-value")).not_to_have_text("–")
    expect(tab.locator(".widget-state")).to_have_attribute("data-state", "on")
    expect(tab.locator(".widget-state .state-pill")).to_have_text("open")
    expect(tab.locator(".widget-table tbody tr")).to_have_count(8)
    expect(tab.locator("#live-state")).to_have_text("live")
    # Live over the one stream: a new value reaches the tile, the gauge, the indicator and the table.
    publish(settings, [("feeds/kitchen/temperature", "35.5"), ("feeds/door/state", "closed"), ("feeds/lab/t", "99")])
    expect(tab.locator(".widget-value .big-value")).to_contain_text("35.5")
    expect(tab.locator(".widget-value .big-value")).to_have_class("big-value trend-up")
    expect(tab.locator(".widget-gauge")).to_have_attribute("data-level", "alarm")
    expect(tab.locator(".widget-state .state-pill")).to_have_text("closed")
    expect(tab.locator(".widget-table tbody tr").first).to_contain_text("99")
    assert tab.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/stream')).length") == 1
    tab.screenshot(path=str(tmp_path / "dashboard-1366.png"), full_page=True)
    assert axe_violations(tab) == []

    # Zooming on the chart fetches that time range again for every widget; Back to live returns.
    box = tab.locator(".widget-chart .u-over").first.bounding_box()
    assert box is not None
    tab.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
    tab.mouse.down()
    tab.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + 20, steps=5)
    tab.mouse.up()
    expect(tab.locator("#back-to-live")).to_be_visible()
    tab.wait_for_function("() => window.rtdpDashTimings.zoom_done !== undefined")
    tab.click("#back-to-live")
    expect(tab.locator("#back-to-live")).to_be_hidden()

    # Editing in place: move the table first, widen it; share with ap; make it public.
    tab.click("#edit-toggle")
    tab.click('.widget-table button[data-action="move-earlier"]')
    expect(tab.locator("#grid .widget").nth(3)).to_have_attribute("data-type", "table")
    tab.click('.widget-table button[data-action="wider"]')
    expect(tab.locator(".widget-state .state-pill")).to_have_text("closed")  # what came live, kept
    expect(tab.locator(".widget-table")).to_have_css("grid-column-start", "span 5")
    tab.click('[data-range="86400"]')
    wait_for(lambda: Dashboard.get_by_id(dashboard_id).range == 86400, what="the range saved")
    tab.fill('#share-form input[name="grantee"]', "ap@nothing.com")
    tab.click('#share-form button[type="submit"]')
    expect(tab.locator("#shares")).to_contain_text("ap@nothing.com", timeout=15_000)
    tab.check('#public-form input[name="public"]')
    expect(tab.locator("#public-link")).to_be_visible()
    tab.screenshot(path=str(tmp_path / "dashboard-edit-1366.png"), full_page=True)
    assert axe_violations(tab) == []
    assert Dashboard.get_by_id(dashboard_id).public

    # ap: sees it, read-only; the widgets on ep's private feeds show nothing of them.
    ap = new_tab(browser, errors)
    sign_in(ap, base, "ap@nothing.com", "1234")
    ap.goto(f"{base}/dashboards")
    expect(ap.locator("#dashboard-list")).to_contain_text("Home")
    ap.click("#dashboard-list a")
    ap.wait_for_function("() => window.rtdpDashReady !== undefined")
    expect(ap.locator("#edit-toggle")).to_have_count(0)
    expect(ap.locator("#editor")).to_have_count(0)
    expect(ap.locator(".widget-hidden")).to_have_count(3)
    assert "kitchen" not in ap.content() and "door/state" not in ap.content()
    expect(ap.locator(".widget-table tbody tr").first).to_contain_text("99")
    assert int(ap.get_attribute(".widget-chart .plot", "data-points") or 0) == 11
    status = ap.evaluate(
        """async (id) => (await fetch('/api/v1/dashboards/' + id, {method: 'PATCH', headers: {
            'Content-Type': 'application/json', 'X-CSRF-Token': RTDP.csrf}, body: '{"name": "mine"}'})).status""",
        dashboard_id,
    )
    assert status == 403
    # The browser logs the refusal it was asked for; nothing else may go wrong.
    assert errors[-1:] == ["console: Failed to load resource: the server responded with a status of 403 (Forbidden)"]
    errors.pop()
    assert axe_violations(ap) == []

    # Anyone with the link, signed out, on a phone: the public feed's widgets only, one column, nothing hidden sideways.
    anonymous = new_tab(browser, errors, PHONE)
    anonymous.goto(f"{base}/dashboards/{dashboard_id}")
    anonymous.wait_for_function("() => window.rtdpDashReady !== undefined")
    expect(anonymous.locator("#grid .widget")).to_have_count(5)
    expect(anonymous.locator(".widget-hidden")).to_have_count(3)
    expect(anonymous.locator("#live-state")).to_have_text("live")
    assert anonymous.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    widths = anonymous.evaluate("Array.from(document.querySelectorAll('#grid .widget')).map(w => w.offsetWidth)")
    assert len(set(widths)) == 1
    anonymous.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)
    assert axe_violations(anonymous) == []

    # ep's editor on a phone: every action reachable without sideways scrolling.
    phone = new_tab(browser, errors, PHONE)
    sign_in(phone, base, "ep@nothing.com", "1234")
    phone.goto(f"{base}/dashboards/{dashboard_id}?edit=1")
    phone.wait_for_function("() => window.rtdpDashReady !== undefined")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for action in phone.locator(".widget-chart .widget-edit button").all():
        action.scroll_into_view_if_needed()
        expect(action).to_be_in_viewport()
    phone.screenshot(path=str(tmp_path / "dashboard-edit-390.png"), full_page=True)
    assert axe_violations(phone) == []

    # Made private again, the link asks the anonymous browser to sign in.
    tab.uncheck('#public-form input[name="public"]')
    expect(tab.locator("#public-link")).to_be_hidden()
    anonymous.goto(f"{base}/dashboards/{dashboard_id}")
    anonymous.wait_for_url(f"{base}/login?next=*")
    assert errors == []
