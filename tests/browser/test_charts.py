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
from playwright.sync_api import Browser, Page, expect

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


def _wave(feed: str, count: int, slow: float, fast: float) -> None:
    """A feed of one axis "wave" holding `count` points, one a second up to now: two sines, in big batches
    through the store layer (summaries included)."""
    axis = create_axis(create_feed(feed, create_user(EMAIL, PASSWORD)), "wave")
    first = time.time() - count
    chunk = 50_000
    for start in range(0, count, chunk):
        write_points([(axis.id, Sample(first + i, round(math.sin(i / slow) + math.sin(i / fast), 4)))
                      for i in range(start, min(count, start + chunk))])


def _range_min_max(base: str, url: str) -> tuple[float, float]:
    """The API's exact lowest and highest y between the since and until of a points request's URL."""
    params = dict(part.split("=") for part in url.split("?")[1].split("&"))
    path = url.split("?")[0].split("/api/")[1]
    exact = httpx.get(
        f"{base}/api/{path}", params={"since": params["since"], "until": params["until"], "limit": 100_000},
        auth=(EMAIL, PASSWORD),
    ).json()["points"]
    ys = [p["y"] for p in exact]
    return min(ys), max(ys)


def _show_all(tab: Page, base: str, feed: str) -> None:
    """Signed in, the feed's graph page on its whole history."""
    sign_in(tab, base, EMAIL, PASSWORD)
    tab.goto(f"{base}/feeds/{feed}/graph")
    _wait_loaded(tab, 0)
    loads = _loads(tab)
    tab.click('[data-window="all"]')
    _wait_loaded(tab, loads)


def test_zoom_on_a_million_points_fetches_the_range_and_draws_its_min_max(
    live_server: LiveServer, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    _wave("big", MILLION, 5000, 37)  # 11.6 days
    _show_all(tab, live_server.url, "big")
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
    assert (min(drawn["ys"]), max(drawn["ys"])) == _range_min_max(live_server.url, url)

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


def test_pinch_zooms_in_fetches_the_range_and_draws_its_min_max(live_server: LiveServer, browser: Browser) -> None:
    _wave("pinchy", 200_000, 3000, 29)
    # A phone: touch events, no mouse.
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        _show_all(tab, live_server.url, "pinchy")
        before = tab.evaluate("() => window.rtdpChart.visibleRange()")

        # Two fingers 40 px apart on the plot's middle move to 200 px apart: a 5x zoom around the middle.
        box = tab.locator("#chart .u-over").bounding_box()
        assert box is not None
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        cdp = context.new_cdp_session(tab)

        def fingers(kind: str, apart: float) -> None:
            points = [] if kind == "touchEnd" else [
                {"x": cx - apart / 2, "y": cy, "id": 0}, {"x": cx + apart / 2, "y": cy, "id": 1}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        loads = _loads(tab)
        with tab.expect_response(lambda r: "/axes/wave/points" in r.url and "until=" in r.url) as answer:
            fingers("touchStart", 40)
            for apart in (80, 120, 160, 200):
                fingers("touchMove", apart)
            fingers("touchEnd", 0)
        _wait_loaded(tab, loads)
        after = tab.evaluate("() => window.rtdpChart.visibleRange()")
        assert (after[1] - after[0]) == pytest.approx((before[1] - before[0]) / 5, rel=0.05)
        middle = (before[0] + before[1]) / 2
        assert after[0] < middle < after[1]
        url = answer.value.url
        assert "since=" in url and "max_points=" in url
        points = answer.value.json()["points"]
        drawn = _drawn(tab)[0]
        assert drawn["xs"] == [p["x"] for p in points] and drawn["ys"] == [p["y"] for p in points]
        assert (min(drawn["ys"]), max(drawn["ys"])) == _range_min_max(live_server.url, url)
        expect(tab.locator("#zoom-back")).to_be_enabled()

        # One finger sideways pans (and fetches what comes into view); the span stays.
        loads = _loads(tab)
        with tab.expect_response(lambda r: "/axes/wave/points" in r.url and "until=" in r.url) as answer:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": cx, "y": cy, "id": 0}]})
            for shift in (20, 40, 60, 80):
                cdp.send("Input.dispatchTouchEvent",
                         {"type": "touchMove", "touchPoints": [{"x": cx + shift, "y": cy, "id": 0}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        _wait_loaded(tab, loads)
        panned = tab.evaluate("() => window.rtdpChart.visibleRange()")
        assert panned[1] - panned[0] == pytest.approx(after[1] - after[0], rel=1e-6)
        assert panned[0] < after[0]  # the finger moved right: earlier data came into view
        assert _drawn(tab)[0]["xs"] == [p["x"] for p in answer.value.json()["points"]]
        assert errors == []
    finally:
        context.close()


def test_a_range_superseded_before_its_answer_is_aborted_quietly(
    live_server: LiveServer, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    _wave("quick", 5000, 300, 7)
    _show_all(tab, live_server.url, "quick")
    failed: list[str] = []
    tab.on("requestfailed", lambda r: failed.append(r.url) if "/points?" in r.url else None)
    now = int(time.time())
    loads = _loads(tab)
    with tab.expect_response(lambda r: "/axes/wave/points" in r.url and f"since={now - 600}" in r.url) as answer:
        tab.evaluate("([a, b]) => { window.rtdpChart.setRange({min: a, max: a + 600});"
                     " window.rtdpChart.setRange({min: b, max: b + 600}); }", [now - 3000, now - 600])
    _wait_loaded(tab, loads)
    assert len(failed) == 1 and f"since={now - 3000}" in failed[0]  # the first range's request, aborted
    assert _drawn(tab)[0]["xs"] == [p["x"] for p in answer.value.json()["points"]]
    expect(tab.locator("#live-state")).not_to_contain_text("could not load")
    assert errors == []


LOCAL_INPUT = """(t) => { const d = new Date(t * 1000), p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" +
    p(d.getMinutes()) + ":" + p(d.getSeconds()); }"""


def test_bool_feed_draws_its_labels_and_the_absolute_range_picker_fetches_that_range(
    live_server: LiveServer, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user(EMAIL, PASSWORD)
    axis = create_axis(create_feed("door", owner, y_cast="bool"), "state")
    Axis.update(unit="closed/open").where(Axis.id == axis.id).execute()
    now = int(time.time())
    write_points([(axis.id, Sample(now - 1800 + i * 10, float(i // 3 % 2))) for i in range(180)])
    sign_in(tab, live_server.url, EMAIL, PASSWORD)
    tab.goto(f"{live_server.url}/feeds/door/graph")
    _wait_loaded(tab, 0)
    # A bool axis: one 0..1 scale named by its unit's labels, the legend and the data table say them.
    assert [a["scale"] for a in tab.evaluate("() => window.rtdpChart.yAxes()")] == ["bool"]
    expect(tab.locator("#chart .chart-legend .value")).to_have_text("open")  # the latest: 179 // 3 % 2 == 1
    tab.click("#chart .chart-table summary")
    cells = tab.locator("#chart .chart-table tbody td")
    expect(cells).to_have_count(180)
    assert set(cells.all_text_contents()) == {"open", "closed"}

    # The absolute picker: From and To in the browser's time zone; the chart fetches and shows exactly that.
    low, high = now - 1200, now - 600
    tab.fill('#range-picker input[name="from"]', tab.evaluate(LOCAL_INPUT, low))
    tab.fill('#range-picker input[name="to"]', tab.evaluate(LOCAL_INPUT, high))
    loads = _loads(tab)
    with tab.expect_response(lambda r: "/axes/state/points" in r.url and "until=" in r.url) as answer:
        tab.click('#range-picker button[type="submit"]')
    _wait_loaded(tab, loads)
    params = dict(part.split("=") for part in answer.value.url.split("?")[1].split("&"))
    assert (float(params["since"]), float(params["until"])) == (low, high)
    assert tab.evaluate("() => window.rtdpChart.visibleRange()") == [low, high]
    drawn = _drawn(tab)[0]
    assert drawn["xs"] == [p["x"] for p in answer.value.json()["points"]]
    assert low <= drawn["xs"][0] and drawn["xs"][-1] <= high and len(drawn["xs"]) == 61
    expect(tab.locator('[data-window="3600"]')).to_have_attribute("aria-pressed", "false")
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
