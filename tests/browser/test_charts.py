"""The chart (static/js/chart.js) in a real browser: zooming fetches the range's detail, so what is
drawn is the API's min/max for that range; gaps break lines and lone points are dots; each unit has its
own y scale (the emulator's system_vm feed)."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from bridge.service import Bridge
from emulator.runner import Emulator
from rtdp.accounts import create_user
from rtdp.codec import Sample
from rtdp.models import Axis, database_proxy
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, write_points
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import publish, sign_in
from tests.support.env import wait_for
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

EMAIL, PASSWORD = "ep@nothing.com", "a-long-password"
MILLION = 1_000_000


def _loads(tab: Page) -> int:
    return int(tab.get_attribute("#chart", "data-loads") or 0)


def _wait_loaded(tab: Page, after: int) -> None:
    tab.wait_for_function(
        "n => { const c = document.querySelector('#chart');"
        " return Number(c.dataset.loads || 0) > n && !c.dataset.loading; }",
        arg=after,
    )


def _drawn(tab: Page) -> list[dict[str, Any]]:
    return list(tab.evaluate("() => window.rtdpChart.drawn()"))


def test_zoom_on_a_million_points_fetches_the_range_and_draws_its_min_max(
    live_server: LiveServer, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    feed = create_feed("big", owner)
    axis = create_axis(feed, "wave")
    first = time.time() - MILLION  # one point a second up to now: 11.6 days
    chunk = 50_000
    for start in range(0, MILLION, chunk):  # big batches through the store layer, summaries included
        write_points([(axis.id, Sample(first + i, round(math.sin(i / 5000) + math.sin(i / 37), 4)))
                      for i in range(start, start + chunk)])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/big/graph")
    _wait_loaded(tab, 0)
    loads = _loads(tab)
    tab.click('[data-window="all"]')
    _wait_loaded(tab, loads)
    overview = _drawn(tab)[0]
    assert 500 < len(overview["xs"]) < 4 * 1366  # downsampled to the chart's width

    # Drag across a tenth of the plot: one request for that range, with max_points for the width.
    box = tab.locator("#chart .u-over").bounding_box()
    assert box is not None
    left, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2
    loads = _loads(tab)
    with tab.expect_response(lambda r: "/axes/wave/points" in r.url and "until=" in r.url) as answer:
        tab.mouse.move(left, y)
        tab.mouse.down()
        tab.mouse.move(left + box["width"] * 0.1, y, steps=5)
        tab.mouse.up()
    _wait_loaded(tab, loads)
    url = answer.value.url
    assert "since=" in url and "max_points=" in url
    points = answer.value.json()["points"]
    drawn = _drawn(tab)[0]
    assert drawn["xs"] == [p["x"] for p in points] and drawn["ys"] == [p["y"] for p in points]
    low, high = drawn["xs"][0], drawn["xs"][-1]
    before = [x for x in overview["xs"] if low <= x <= high]
    assert len(drawn["xs"]) > 4 * len(before)  # detail, not the overview's few points stretched
    # The API's min/max of that range are drawn (spikes survive).
    params = dict(part.split("=") for part in url.split("?")[1].split("&"))
    exact = httpx.get(
        f"{live_server.url}/api/v1/feeds/big/axes/wave/points",
        params={"since": params["since"], "until": params["until"], "limit": 100_000}, auth=(EMAIL, PASSWORD),
    ).json()["points"]
    ys = [p["y"] for p in exact]
    assert min(drawn["ys"]) == min(ys) and max(drawn["ys"]) == max(ys)

    # The wheel zooms in around the cursor and fetches again; the arrow keys pan and fetch again.
    for action in (
        lambda: (tab.mouse.move(box["x"] + box["width"] / 2, y), tab.mouse.wheel(0, -300)),
        lambda: (tab.focus("#chart .chart-canvas"), tab.keyboard.press("ArrowRight")),
    ):
        loads = _loads(tab)
        with tab.expect_response(lambda r: "/axes/wave/points" in r.url and "until=" in r.url) as again:
            action()
        _wait_loaded(tab, loads)
        assert _drawn(tab)[0]["xs"] == [p["x"] for p in again.value.json()["points"]]
    expect(tab.locator("#zoom-back")).to_be_enabled()
    assert errors == []


def test_gaps_break_lines_and_a_lone_point_is_a_dot(live_server: LiveServer, page: tuple[Page, ConsoleErrors]) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    feed = create_feed("gappy", owner)
    axis = create_axis(feed, "t")
    now = time.time()
    xs = [now - 600 + i for i in range(20)] + [now - 300] + [now - 100 + i for i in range(20)]
    write_points([(axis.id, Sample(x, float(i % 5))) for i, x in enumerate(xs)])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/gappy/graph")
    _wait_loaded(tab, 0)
    columns = tab.evaluate("() => window.rtdpChart.columns()")
    assert columns[1].count(None) == 2  # a break on each side of the lone point
    dots = tab.evaluate("() => window.rtdpChart.dots()")[0]
    assert [columns[0][i] for i in dots] == [pytest.approx(now - 300)]
    # The window (1 h by default) fits the 10 minutes of data.
    assert tab.evaluate("() => window.rtdpChart.range()") == {"window": 3600}
    x_min = tab.evaluate("() => window.rtdpChart.visibleRange()[0]")
    assert now - 700 < x_min < now - 600
    assert errors == []


def test_units_and_two_scales_on_system_vm(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    create_user(EMAIL, PASSWORD)
    with Emulator(settings, database_proxy.obj, owner_email=EMAIL, sources=["system"]):
        wait_for(lambda: Axis.select().where(Axis.name == "net_rx_bytes_per_s", Axis.point_count > 1).exists(), 20,
                 what="system_vm's network rates")
        sign_in(tab, live_server.url, EMAIL, PASSWORD)
        tab.goto(f"{live_server.url}/feeds/system_vm/graph")
        _wait_loaded(tab, 0)
        axes = tab.evaluate("() => window.rtdpChart.yAxes()")
        by_label = {a["label"]: a for a in axes}
        assert by_label["%"]["side"] != by_label["B/s"]["side"]  # one scale per unit, left and right
        assert by_label["%"]["scale"] != by_label["B/s"]["scale"]
        legend = tab.locator("#chart .chart-legend")
        expect(legend).to_contain_text("cpu_percent")
        value = legend.locator("li", has_text="memory_percent").locator(".value")
        expect(value).to_have_text(re.compile(r"^[\d.,]+ %$"))
        value = legend.locator("li", has_text="net_rx").locator(".value")
        expect(value).to_have_text(re.compile(r"^[\d.,]+ (k|M|G)?B/s$"))
        assert "chart of" in (tab.get_attribute("#chart .chart-canvas", "aria-label") or "")
        tab.click("#chart .chart-table summary")
        expect(tab.locator("#chart .chart-table table th", has_text="cpu_percent (%)")).to_be_visible()
    assert errors == [], json.dumps(errors)


def test_an_axis_that_starts_sending_joins_the_open_chart(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    axis = create_axis(create_feed("growing", owner), "first")
    write_points([(axis.id, Sample(time.time() - 30 + i, float(i))) for i in range(30)])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/growing/graph")
    _wait_loaded(tab, 0)
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)
    publish(settings, [("feeds/growing/second", "42")])
    value = tab.locator("#chart .chart-legend li", has_text="second").locator(".value")
    expect(value).to_have_text("42", timeout=15000)
    assert [s["axis"] for s in _drawn(tab)] == ["first", "second"]
    assert errors == []
