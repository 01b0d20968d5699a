"""Every page in a real browser: axe-core (from npm, injected) finds no violation, on a desktop and on a
phone (390x844), where no page overflows sideways; and no console error. Each page's screenshot goes
to the test's tmp_path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from rtdp import dashboards
from rtdp.accounts import create_token, create_user, principal_for
from rtdp.codec import Sample
from rtdp.permissions import Access
from rtdp.store import create_axis, create_feed, write_points
from tests.browser.test_pages import sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
EMAIL, PASSWORD = "admin@nothing.com", "a-long-password"
PAGES = [
    "/", "/feeds/kitchen", "/feeds/kitchen/graph", "/feeds/kitchen/sparklines", "/feeds/kitchen/axes/temperature",
    "/account", "/groups", "/admin", "/admin/users", "/tools", "/feeds/new_feed", "/alerts", "/dashboards",
    "/dashboards/{board}", "/dashboards/{board}?edit=1",
]
# One widget of each kind.
WIDGETS = [
    {"type": "chart", "series": [{"feed": "kitchen", "axis": "temperature"}]},
    {"type": "value", "feed": "kitchen", "axis": "temperature"},
    {"type": "gauge", "feed": "kitchen", "axis": "temperature", "min": 0, "max": 40, "thresholds": [25, 30]},
    {"type": "state", "feed": "kitchen", "axis": "temperature"},
    {"type": "table", "series": [{"feed": "kitchen", "axis": "temperature"}]},
]
ANONYMOUS = ["/", "/login", "/register"]


def _violations(tab: Any) -> list[str]:
    tab.add_script_tag(path=str(AXE))
    result = tab.evaluate("async () => (await axe.run(document)).violations")
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])}: {v['nodes'][0]['target']})" for v in result]


DESKTOP, PHONE = {"width": 1366, "height": 800}, {"width": 390, "height": 844}
# Every button, link and field in view: none hidden off to the side (in a table that scrolls sideways).
OUT_OF_VIEW = """(w) => Array.from(document.querySelectorAll('main button, main a, main input, main select'))
    .filter(e => e.offsetParent !== null && !e.closest('details:not([open])'))
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > w + 1 || r.left < -1); })
    .map(e => (e.textContent || e.name || e.getAttribute('aria-label') || e.tagName).trim().slice(0, 30))"""


@pytest.mark.parametrize(
    ("viewport", "scheme"), [(DESKTOP, "light"), (PHONE, "light"), (DESKTOP, "dark"), (PHONE, "dark")],
    ids=["desktop", "phone", "desktop-dark", "phone-dark"],
)
def test_no_axe_violation_and_no_sideways_overflow(
    live_server: LiveServer, browser: Browser, viewport: dict[str, int], scheme: str, tmp_path: Path
) -> None:
    if not AXE.is_file():
        pytest.fail("axe-core is missing: npm ci")
    admin = create_user(EMAIL, PASSWORD, admin=True)
    feed = create_feed("kitchen", admin, description="The kitchen's sensors")
    create_feed("new_feed", admin)
    axis = create_axis(feed, "temperature")
    create_token(admin, access=Access.WRITE, name="device")
    now = time.time()
    write_points([(axis.id, Sample(now - 60 + i, 20 + i / 10)) for i in range(60)])
    board = dashboards.create(principal_for(admin), {"name": "Home", "widgets": WIDGETS}).id
    found: dict[str, list[str]] = {}
    overflow: dict[str, object] = {}
    errors: list[str] = []
    context = browser.new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)  # type: ignore[arg-type] -- axe is injected
    tab = context.new_page()
    tab.on("console", lambda m: m.type == "error" and errors.append(m.text))
    tab.on("pageerror", lambda e: errors.append(str(e)))
    for path in ANONYMOUS:
        tab.goto(live_server.url + path)
        found[f"anonymous {path}"] = _violations(tab)
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    for page in PAGES:
        path = page.format(board=board)
        tab.goto(live_server.url + path)
        if path.endswith("graph"):
            tab.wait_for_load_state("networkidle")
        if path.startswith("/dashboards/"):
            tab.wait_for_function("() => window.rtdpDashReady !== undefined")
        shot = (path.strip("/").replace("/", "_").replace("?", "_") or "home") + ".png"
        tab.screenshot(path=str(tmp_path / shot), full_page=True)
        found[page] = _violations(tab)
        width = int(tab.evaluate("() => document.documentElement.scrollWidth"))
        if width > viewport["width"]:
            overflow[page] = width
        hidden = tab.evaluate(OUT_OF_VIEW, viewport["width"])
        if hidden:
            overflow[page] = hidden
    context.close()
    bad = {path: v for path, v in found.items() if v}
    assert bad == {}, "\n".join(f"{p}: {v}" for p, v in bad.items())
    assert overflow == {}
    assert errors == []
