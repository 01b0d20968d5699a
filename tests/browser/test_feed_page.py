"""The feed page in a real browser: settings and units saved from the page (PATCH with the page's CSRF
token), numbers that follow new points live, and an export of a time range."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, expect

from bridge.service import Bridge
from rtdp.accounts import create_user
from rtdp.codec import Sample
from rtdp.models import Axis, Feed
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, write_points
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import publish, sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

EMAIL, PASSWORD = "ep@nothing.com", "a-long-password"


def test_settings_units_live_numbers_and_export(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    feed = create_feed("kitchen", owner)
    axis = create_axis(feed, "temperature")
    now = time.time()
    write_points([(axis.id, Sample(now - 100 + i, 20 + i / 7)) for i in range(100)])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/kitchen")
    row = tab.locator('#axes tr[data-axis="temperature"]')
    expect(row.locator('[data-field="last"]')).to_have_text("34.14")  # 4 significant digits, not 34.142857142857146
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)

    # Settings: description and retention; a bad value is named next to its field.
    tab.fill('#feed-settings textarea[name="description"]', "Sensors in the kitchen")
    tab.fill('#feed-settings input[name="retention_days"]', "30")
    tab.click('#feed-settings button[type="submit"]')
    expect(tab.locator("#settings-status")).to_have_text("Saved.")
    stored = Feed.get(Feed.name == "kitchen")
    assert stored.description == "Sensors in the kitchen" and stored.retention_days == 30

    # Units: saved, and the last value carries it at once.
    tab.fill('#axis-units tr[data-units-of="temperature"] input[name="unit"]', "°C")
    tab.fill('#axis-units tr[data-units-of="temperature"] input[name="label"]', "Kitchen")
    tab.click('#axis-units button[type="submit"]')
    expect(tab.locator("#units-status")).to_have_text("Saved.")
    assert Axis.get(Axis.name == "temperature").unit == "°C"
    expect(row.locator('[data-field="last"]')).to_have_text("34.14 °C")

    # Live: a new point changes the last value and, shortly after, the count.
    publish(settings, [("feeds/kitchen/temperature", json.dumps({"y": 1234.5678}))])
    expect(row.locator('[data-field="last"]')).to_have_text(re.compile(r"^1,?235 °C$"), timeout=15000)
    expect(row.locator('[data-field="points"]')).to_have_text("101", timeout=15000)

    # Export a time range: since/until go as epoch seconds.
    tab.select_option('#export-form select[name="format"]', "json")
    tab.fill('#export-form input[name="from"]', time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 50)))
    tab.fill('#export-form input[name="to"]', time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 20)))
    with tab.expect_download() as download:
        tab.click('#export-form button[type="submit"]')
    query = parse_qs(urlparse(download.value.url).query)
    assert query["format"] == ["json"] and "axis" not in query
    assert abs(float(query["since"][0]) - (now - 50)) < 1.5 and abs(float(query["until"][0]) - (now - 20)) < 1.5
    points = json.loads(open(download.value.path()).read())
    assert 28 <= len(points) <= 31 and all(p["unit"] == "°C" for p in points)
    assert errors == []


def test_sparklines_show_the_latest_points_and_the_axis_page_counts_live(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    axis = create_axis(create_feed("big", owner), "level")
    now = time.time()
    # 11 days of points, then the latest: a downsampled overview would end on a bucket's min or max.
    history = [(axis.id, Sample(now - 950_400 + 100 * i, 10 + (i % 13))) for i in range(9_500)]
    write_points([*history, (axis.id, Sample(now - 5, 16.983))])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/big/sparklines")
    canvas = tab.locator('tr[data-axis="level"] canvas.spark')
    expect(canvas).to_have_attribute("data-points", "240", timeout=15000)
    expect(tab.locator('tr[data-axis="level"] .last')).to_have_text("16.98")

    tab.goto(f"{live_server.url}/feeds/big/axes/level")
    expect(tab.locator("#point-count")).to_have_text("9,501")
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)
    publish(settings, [("feeds/big/level", "3")])
    expect(tab.locator("#point-count")).to_have_text("9,502", timeout=15000)
    assert errors == []
