"""A dashboard in a real browser (issue 13's targets), run by `bench/graph_page.py` (its default page):

    .venv/bin/python bench/graph_page.py [--page dashboard] [--minutes 1] [--rate 100] [--points 1000000]
        [--loads 5] [--zooms 5] [--sample 5] [--keep]

1. A fresh data dir whose SQLite database holds 3 datetime feeds of --points points each (one axis, the
   last 50 minutes, so the dashboard's 1 h range shows all of it) and one dashboard of 12 widgets over them:
   6 line charts (each feed, two pairs, all three), 3 value tiles with sparklines, a gauge, an on/off
   indicator and a table. The real viewer (create_app + build_server on a free port), a private Mosquitto
   and a real bridge.
2. Chromium (Debian's, through Playwright) at 1366x800 signs in and opens the dashboard --loads times: the
   time from navigation start to the page's `rtdpDashReady` mark (every widget drawn with its history).
3. Zoom: --zooms times, the page's own zoom (what a drag across a chart calls, `rtdpDashZoom(min, max)`)
   to a 5-minute slice of the history: from the call to every widget redrawn with the slice fetched again.
   Then --zooms mouse drags across 8% of the first chart, each from the live range: from the button's
   release to every widget redrawn (what a user waits for).
4. Live: paho publishes --rate points/s to EACH feed (one message per point, x = now) for --minutes, through
   Mosquitto and the bridge to the page's one SSE stream: every widget gets --rate points/s. Every
   --sample seconds: frames per second counted with requestAnimationFrame, the longest frame and the JS
   heap (CDP); the heap also after a forced garbage collection at the start and at the end.

Prints a table and writes bench/results/dashboard_<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from bench.graph_page import Publisher, heap
from bridge.service import Bridge
from rtdp import dashboards
from rtdp.accounts import create_user, principal_for
from rtdp.codec import Sample
from rtdp.database import open_database
from rtdp.models import database_proxy
from rtdp.mqtt import Endpoint
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, write_points
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.env import wait_for

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
Row = tuple[str, str, str, bool | None]
EMAIL, PASSWORD = "bench@nothing.com", "bench-password"
FEEDS = ("bench_a", "bench_b", "bench_c")
AXIS = "v"
HISTORY_SECONDS = 3000.0

FRAME_COUNTER = """() => {
  if (window.__frames) return;
  const f = window.__frames = { count: 0, longest: 0, last: performance.now(), start: performance.now() };
  function tick(now) {
    f.count += 1; f.longest = Math.max(f.longest, now - f.last); f.last = now; requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
}"""
READ_FRAMES = """() => {
  const f = window.__frames, now = performance.now();
  let points = 0;
  document.querySelectorAll('.widget-chart .plot').forEach(w => { points += Number(w.dataset.points || 0); });
  const out = { count: f.count, longest: f.longest, elapsed: now - f.start, points: points };
  f.count = 0; f.longest = 0; f.start = now;
  return out;
}"""


def widgets() -> list[dict[str, Any]]:
    one = [{"feed": f, "axis": AXIS} for f in FEEDS]
    charts = [[one[0]], [one[1]], [one[2]], one[:2], one[1:], one]
    return [
        *({"type": "chart", "title": f"chart {i + 1}", "series": s, "w": 4, "h": 2} for i, s in enumerate(charts)),
        *({"type": "value", "title": f"value {f}", **one[i]} for i, f in enumerate(FEEDS)),
        {"type": "gauge", "title": "gauge", **one[0], "min": 0, "max": 60, "thresholds": [30, 45]},
        {"type": "state", "title": "state", **one[1]},
        {"type": "table", "title": "table", "series": one},
    ]


def fill(settings: Settings, points: int, now: float) -> dict[str, Any]:
    """The user, 3 feeds of `points` points ending now, and the dashboard."""
    db = open_database(settings.database_url)
    started = time.perf_counter()
    owner = create_user(EMAIL, PASSWORD)
    step = HISTORY_SECONDS / points
    first = now - HISTORY_SECONDS
    chunk = 20_000
    for index, name in enumerate(FEEDS):
        axis = create_axis(create_feed(name, owner), AXIS)
        for start in range(0, points, chunk):
            batch = []
            for i in range(start, min(points, start + chunk)):
                spike = 40.0 if i == points // (index + 2) else 0.0
                y = 20 + 5 * math.sin(i / 40_000 + index) + math.sin(i / 700) + spike
                batch.append((axis.id, Sample(first + i * step, round(y, 4))))
            write_points(batch)
    board = dashboards.create(principal_for(owner), {"name": "bench", "widgets": widgets()})
    db.close()
    return {"points": points * len(FEEDS), "seconds": round(time.perf_counter() - started, 1), "dashboard": board.id}


def sample(tab: Any, cdp: Any, seconds: float, period: float) -> list[dict[str, Any]]:
    samples = []
    tab.evaluate(READ_FRAMES)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tab.wait_for_timeout(period * 1000)
        frames = tab.evaluate(READ_FRAMES)
        samples.append({
            "t": round(time.monotonic() - started, 1),
            "fps": round(frames["count"] / (frames["elapsed"] / 1000), 1),
            "longest_frame_ms": round(frames["longest"], 1),
            "heap_mb": round(heap(cdp), 2),
            "points": frames["points"],
        })
        s = samples[-1]
        print(f"  t={s['t']:>6}s fps={s['fps']:>5} longest={s['longest_frame_ms']:>6} ms heap={s['heap_mb']:>6} MB "
              f"chart points={s['points']}", flush=True)
    return samples


def chart_points(tab: Any) -> int:
    """Points drawn by the 6 charts together."""
    return int(tab.evaluate(
        "() => Array.from(document.querySelectorAll('.widget-chart .plot'))"
        ".reduce((n, w) => n + Number(w.dataset.points || 0), 0)"
    ))


CHARTS_IDLE = "() => !document.querySelector('.widget-chart .plot[data-loading]')"


def drag(tab: Any, start: float) -> dict[str, Any]:
    """From the live range, a mouse drag across 8% of the first chart (from `start` of its width): the time
    from the mouse button's release to every widget redrawn with the range fetched again (the page's
    zoom_done mark), as a user would zoom."""
    if tab.locator("#back-to-live").is_visible():
        tab.click("#back-to-live")
    tab.wait_for_function(CHARTS_IDLE)
    box = tab.locator(".widget-chart .plot .u-over").first.bounding_box()
    y = box["y"] + box["height"] / 2
    left = box["x"] + box["width"] * start
    tab.evaluate("() => { window.__up = undefined; document.addEventListener('mouseup', () => "
                 "{ window.__up = performance.now(); }, { capture: true, once: true }); }")
    tab.mouse.move(left, y)
    tab.mouse.down()
    tab.mouse.move(left + box["width"] * 0.08, y, steps=4)
    tab.mouse.up()
    tab.wait_for_function("() => window.__up !== undefined && window.rtdpDashTimings.zoom_done > window.__up",
                          timeout=30_000)
    elapsed = tab.evaluate("() => window.rtdpDashTimings.zoom_done - window.__up")
    return {"ms": round(elapsed, 1), "chart_points": chart_points(tab)}


def measure(url: str, board: str, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 800})
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(f"{url}/login")
        tab.fill('input[name="email"]', EMAIL)
        tab.fill('input[name="password"]', PASSWORD)
        tab.click('form button[type="submit"]')
        tab.wait_for_url(f"{url}/")

        page = f"{url}/dashboards/{board}"
        loads = []
        for _ in range(args.loads):
            tab.goto(page)
            tab.wait_for_function("() => window.rtdpDashReady !== undefined", timeout=60_000)
            marks = tab.evaluate("() => Object.assign({ready: window.rtdpDashReady}, window.rtdpDashTimings)")
            marks["widgets"] = tab.locator("#grid .widget").count()
            marks["chart_points"] = chart_points(tab)
            loads.append({k: round(v, 1) if isinstance(v, float) else v for k, v in marks.items()})
            print(f"  load: {loads[-1]}", flush=True)
        result["loads"] = loads

        zooms = []
        now = time.time()
        for i in range(args.zooms):
            low = now - HISTORY_SECONDS + 300 + i * 400
            elapsed = tab.evaluate(
                "async ([a, b]) => { const t = performance.now(); const done = await window.rtdpDashZoom(a, b); "
                "return done - t; }", [low, low + 300])
            zooms.append({"ms": round(elapsed, 1), "chart_points": chart_points(tab)})
            print(f"  zoom to 5 min: {zooms[-1]}", flush=True)
        result["zooms"] = zooms
        result["drags"] = drags = []
        for i in range(args.zooms):
            drags.append(drag(tab, 0.3 + 0.05 * i))
            print(f"  drag across 8% of chart 1: {drags[-1]}", flush=True)
        tab.click("#back-to-live")
        tab.wait_for_timeout(1000)

        if args.minutes > 0:
            cdp = context.new_cdp_session(tab)
            cdp.send("Performance.enable")
            tab.evaluate(FRAME_COUNTER)
            result["idle"] = sample(tab, cdp, min(15.0, args.minutes * 60 / 3), args.sample)
            publisher = Publisher(settings, args.rate * len(FEEDS), topics=[f"feeds/{feed}/{AXIS}" for feed in FEEDS])
            publisher.start()
            tab.wait_for_timeout(3000)
            result["heap_gc_start_mb"] = round(heap(cdp, collect=True), 2)
            result["live"] = sample(tab, cdp, args.minutes * 60, args.sample)
            result["heap_gc_end_mb"] = round(heap(cdp, collect=True), 2)
            publisher.halt.set()
            publisher.join(10)
            result["published"] = publisher.sent
            result["published_per_s_per_feed"] = round(publisher.sent / len(FEEDS) / (args.minutes * 60 + 3), 1)
            events = tab.evaluate("() => Number(document.documentElement.dataset.streamEvents || 0)")
            result["events_received"] = int(events)
        result["page_errors"] = errors
        browser.close()
    return result


def run(args: argparse.Namespace, workdir: Path, running_mosquitto: Any, running_viewer: Any) -> int:
    from rtdp.settings import BrokerURL, HostPort

    load_before = os.getloadavg()
    started = time.time()
    with running_mosquitto(workdir / "mosquitto") as mosquitto:
        settings = Settings(
            data_dir=workdir / "data", broker=BrokerURL.parse(mosquitto.url), http=HostPort("127.0.0.1", 0)
        )
        print(f"filling 3 feeds x {args.points:,} points and a 12-widget dashboard ...", flush=True)
        filled = fill(settings, args.points, time.time())
        print(f"  {filled}", flush=True)
        with running_viewer(settings) as url:
            assert settings.broker is not None
            bridge = Bridge(settings, Endpoint.of(settings.broker), "bench-bridge", database_proxy.obj)
            bridge.start()
            wait_for(bridge.ready.is_set, 10, what="the bridge to subscribe")
            try:
                result = measure(url, filled["dashboard"], args, settings)
            finally:
                bridge.stop(timeout=10)
    load_after = os.getloadavg()

    ready = statistics.median(m["ready"] for m in result["loads"])
    zoom = statistics.median(z["ms"] for z in result["zooms"]) if result["zooms"] else math.nan
    dragged = statistics.median(d["ms"] for d in result["drags"]) if result["drags"] else math.nan
    rows: list[Row] = [
        ("12 widgets painted with 3 x 1M-point history (nav -> all drawn), median",
         f"{ready:.0f} ms", "<= 1000 ms", ready <= 1000),
        ("zoom to 5 min: every widget refetched and redrawn, median", f"{zoom:.0f} ms", "<= 200 ms", zoom <= 200),
        ("mouse drag across 8% of a chart (~4 min): release -> every widget redrawn, median",
         f"{dragged:.0f} ms", "<= 200 ms", dragged <= 200),
    ]
    summary: dict[str, Any] = {"ready_ms_median": ready, "zoom_ms_median": zoom, "drag_ms_median": dragged}
    if "live" in result:
        fps = [s["fps"] for s in result["live"]]
        idle = [s["fps"] for s in result["idle"]]
        gc_start, gc_end = result["heap_gc_start_mb"], result["heap_gc_end_mb"]
        back = gc_end <= gc_start * 1.1 + 0.5
        summary.update(fps_median=statistics.median(fps), fps_min=min(fps), heap_gc=[gc_start, gc_end])
        rows += [
            (f"live, {args.rate:g} points/s into every widget: fps min / median",
             f"{min(fps)} / {statistics.median(fps)}", f">= 50 median (idle {statistics.median(idle)})",
             statistics.median(fps) >= 50),
            ("longest frame, live", f"{max(s['longest_frame_ms'] for s in result['live'])} ms", "", None),
            ("JS heap after GC, start -> end", f"{gc_start} -> {gc_end} MB", "back to its start (+10%)", back),
            ("JS heap samples, start -> max -> end",
             f"{result['live'][0]['heap_mb']} -> {max(s['heap_mb'] for s in result['live'])} -> "
             f"{result['live'][-1]['heap_mb']} MB", "", None),
            ("points published / received on the one stream",
             f"{result['published']} ({result['published_per_s_per_feed']}/s per feed) / {result['events_received']}",
             "", None),
        ]
    print()
    print("| measure | result | target | met |\n| --- | --- | --- | --- |")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'' if met is None else ('met' if met else '**not met**')} |")
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f}; errors: {result['page_errors']}")
    when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"dashboard_{when}.json"
    path.write_text(json.dumps({
        "started": when, "args": vars(args), "fill": filled, "load_before": load_before, "load_after": load_after,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "summary": summary, **result,
    }, indent=1))
    print(f"wrote {path}")
    return 0
