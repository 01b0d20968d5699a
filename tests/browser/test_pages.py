"""The pages in a real browser: sign in, create a feed and an axis, and watch points published over
MQTT reach the live graph, the axis table and the sparklines without a reload."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

from bridge.service import Bridge
from rtdp.accounts import create_user
from rtdp.settings import Settings
from tests.browser.conftest import ConsoleErrors
from tests.support.env import UPDATE_SCREENSHOT
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs"


def publish(settings: Settings, messages: list[tuple[str, str]]) -> None:
    """What a device does: QoS 1 publishes to feeds/<feed>/<axis>, waiting for each PUBACK."""
    assert settings.broker is not None
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{time.monotonic_ns()}", protocol=mqtt.MQTTv311)
    client.connect(settings.broker.host, settings.broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def sign_in(tab: Page, base: str, email: str, password: str) -> None:
    tab.goto(f"{base}/login")
    tab.fill('input[name="email"]', email)
    tab.fill('input[name="password"]', password)
    tab.click('form button[type="submit"]')
    tab.wait_for_url(f"{base}/")


def chart_points(tab: Page) -> int:
    return int(tab.get_attribute("#chart", "data-points") or 0)


def canvas_image(tab: Page) -> str:
    return str(tab.evaluate("() => document.querySelector('#chart canvas').toDataURL()"))


def test_feed_to_live_graph_through_the_real_pipeline(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors],
    tmp_path: Path,
) -> None:
    tab, errors = page
    base = live_server.url
    create_user("ep@nothing.com", "a-long-password")
    sign_in(tab, base, "ep@nothing.com", "a-long-password")
    expect(tab.locator("header.site .user")).to_contain_text("ep@nothing.com")

    # Create a feed (owner: me) and two axes in place, without a reload.
    tab.fill('#create-feed input[name="name"]', "lab")
    tab.fill('#create-feed textarea[name="description"]', "<script>window.pwned = 1</script>")
    tab.click('#create-feed button[type="submit"]')
    tab.wait_for_url(f"{base}/feeds/lab")
    marker = tab.evaluate("() => { window.notReloaded = true; return true; }")
    for name in ("temp", "humidity"):
        tab.fill('#add-axis input[name="name"]', name)
        tab.click('#add-axis button[type="submit"]')
        expect(tab.locator(f'#axes tr[data-axis="{name}"]')).to_be_visible()
    expect(tab.locator('details.examples[data-axis="humidity"] [data-field="topic"]')).to_have_text(
        "feeds/lab/humidity"
    )
    tab.fill('#axes tr[data-axis="humidity"] input[name="name"]', "rh")
    tab.click('#axes tr[data-axis="humidity"] form.rename-axis button')
    expect(tab.locator('#axes tr[data-axis="rh"]')).to_be_visible()
    assert tab.evaluate("() => window.notReloaded") is marker is True
    assert tab.evaluate("() => window.pwned") is None

    # History first: points stored before the graph opens (the last hour, one every 15 s).
    now = time.time()
    xs = [now - 3540 + 15 * i for i in range(236)]  # inside the default 1 h window
    temp = [{"x": x, "y": round(21 + 3 * math.sin(i / 20) + 0.6 * math.sin(i / 3), 3)} for i, x in enumerate(xs)]
    humidity = [{"x": x, "y": round(48 + 9 * math.cos(i / 31), 3)} for i, x in enumerate(xs)]
    publish(settings, [("feeds/lab/temp", json.dumps(temp)), ("feeds/lab/rh", json.dumps(humidity))])
    tab.goto(f"{base}/feeds/lab/graph")
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)
    tab.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) >= 472", timeout=15000)
    before = canvas_image(tab)

    # Then live: new points over MQTT reach the chart through bridge, broker and SSE.
    live = [(now - 49.5 + i, 24.0 + i / 5) for i in range(10)]  # between history's x values
    publish(settings, [("feeds/lab/temp", json.dumps({"x": x, "y": y})) for x, y in live])
    tab.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) >= 482", timeout=15000)
    tab.wait_for_function("(before) => document.querySelector('#chart canvas').toDataURL() !== before", arg=before)
    assert chart_points(tab) == 482  # nothing doubled (history and live overlap nowhere), nothing lost

    # The legend names the axes; window, pause and zoom controls work without errors.
    expect(tab.locator("#chart .chart-legend")).to_contain_text("temp")
    expect(tab.locator("#chart .chart-legend")).to_contain_text("rh")
    # The README's picture: refreshed only on request, so a test run never dirties the work tree.
    shot = DOCS / "graph.png" if UPDATE_SCREENSHOT else tmp_path / "graph.png"
    tab.locator("main").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    tab.click("#pause")
    expect(tab.locator("#pause")).to_have_text("Resume")
    publish(settings, [("feeds/lab/temp", json.dumps({"x": now - 27.5, "y": 30}))])
    tab.wait_for_timeout(300)  # paused: the count must stay (a negative check needs a bounded wait)
    assert chart_points(tab) == 482
    tab.click("#pause")
    tab.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) === 483", timeout=15000)

    # The 5 minute window reloads history for it and drops what is older.
    tab.click('[data-window="300"]')
    tab.wait_for_function(
        "() => { const n = Number(document.querySelector('#chart').dataset.points); return n > 11 && n < 100; }",
        timeout=15000,
    )
    box = tab.locator("#chart .u-over").bounding_box()
    assert box is not None
    tab.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    tab.mouse.down()
    tab.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)
    tab.mouse.up()
    expect(tab.locator("#zoom-back")).to_be_enabled()
    tab.click("#zoom-back")
    expect(tab.locator("#zoom-back")).to_be_disabled()

    # The axis page: the live table takes new points on top, with the trend colour.
    tab.goto(f"{base}/feeds/lab/axes/temp")
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)
    publish(settings, [("feeds/lab/temp", json.dumps({"x": now - 12.5, "y": 1}))])
    expect(tab.locator("#points tbody tr").first).to_have_class("trend-down", timeout=15000)

    # Sparklines: stored history drawn for each axis.
    tab.goto(f"{base}/feeds/lab/sparklines")
    tab.wait_for_function(
        "() => Array.from(document.querySelectorAll('canvas.spark')).every(c => Number(c.dataset.points) > 0)",
        timeout=15000,
    )
    assert errors == [], errors


def test_denied_feed_is_a_403_page(live_server: LiveServer, page: tuple[Page, ConsoleErrors]) -> None:
    from rtdp.store import create_feed

    tab, errors = page
    ep = create_user("ep@nothing.com", "a-long-password")
    create_user("ap@nothing.com", "another-password")
    create_feed("manual_feed_a", ep)
    sign_in(tab, live_server.url, "ap@nothing.com", "another-password")
    answer = tab.goto(f"{live_server.url}/feeds/manual_feed_a")
    assert answer is not None and answer.status == 403
    expect(tab.locator("h1")).to_contain_text("Access denied")
    expect(tab.locator("header.site .user")).to_contain_text("ap@nothing.com")
    assert [e for e in errors if "403" not in e] == []
