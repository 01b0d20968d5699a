"""The graph and dashboard pages in a real browser: first paint of a large history, zoom, then frame rate
and JS heap under a live stream.

    .venv/bin/python bench/graph_page.py                      # the dashboard (issue 13): see bench/dashboard_page.py
    .venv/bin/python bench/graph_page.py --page graph [--quick] [--minutes 10] [--rate 100] [--points 1000000]
        [--loads 5] [--sample 5] [--trace] [--keep]            # one feed's graph page (issue 3), below

1. A fresh data dir whose SQLite database holds one datetime feed with 3 axes of --points points each
   (the last 50 minutes, so the page's default 1 h window shows the whole history). The real viewer
   (create_app + build_server on a free port), a private Mosquitto and a real bridge.
2. Chromium (Debian's, through Playwright) signs in and opens /feeds/<feed>/graph --loads times: the
   time from navigation start to the page's `window.rtdpGraphReady` mark (the first draw with the
   history), with the page's own marks (stream open, history requested, history received).
3. Live: paho publishes --rate points/s (one message per point, round-robin over the axes, x = now)
   for --minutes, through Mosquitto and the bridge to the page's SSE stream. Every --sample seconds:
   frames per second counted with requestAnimationFrame in the page, the longest frame, the JS heap
   (CDP Performance.getMetrics) and the number of points on the chart. The heap is also read after a
   forced garbage collection at the start and at the end. Before the live phase, the same sampling
   with nothing arriving gives the idle baseline.

Prints a table and writes bench/results/graph_<timestamp>.json. --trace writes a Chrome performance trace
of one page load and of 5 s of live updates next to it (open in chrome://tracing or Perfetto).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT)]

from bridge.service import Bridge  # noqa: E402
from rtdp.accounts import create_user  # noqa: E402
from rtdp.codec import Sample  # noqa: E402
from rtdp.database import open_database  # noqa: E402
from rtdp.models import database_proxy  # noqa: E402
from rtdp.mqtt import Endpoint  # noqa: E402
from rtdp.settings import BrokerURL, HostPort, Settings  # noqa: E402
from rtdp.store import create_axis, create_feed, write_points  # noqa: E402
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.env import wait_for  # noqa: E402
from tests.support.mosquitto import running_mosquitto  # noqa: E402
from viewer.app import build_server, create_app  # noqa: E402

RESULTS = BENCH / "results"
Row = tuple[str, str, str, bool | None]  # a table row: measure, result, target, met (None: no target)
EMAIL, PASSWORD, FEED = "bench@nothing.com", "bench-password", "bench"
AXES = ("a", "b", "c")
HISTORY_SECONDS = 3000.0  # 50 minutes: inside the page's default 1 h window for the whole run

# Counts animation frames in the page; the bench reads and resets it at every sample.
FRAME_COUNTER = """() => {
  if (window.__frames) return;
  const f = window.__frames = { count: 0, longest: 0, last: performance.now(), start: performance.now() };
  function tick(now) {
    f.count += 1;
    f.longest = Math.max(f.longest, now - f.last);
    f.last = now;
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
}"""
READ_FRAMES = """() => {
  const f = window.__frames, now = performance.now();
  const out = { count: f.count, longest: f.longest, elapsed: now - f.start,
                points: Number(document.querySelector('#chart').dataset.points || 0) };
  f.count = 0; f.longest = 0; f.start = now;
  return out;
}"""


def fill(settings: Settings, points: int, now: float) -> dict[str, Any]:
    """The user, the feed and 3 x `points` points ending now, written in big batches."""
    db = open_database(settings.database_url)
    started = time.perf_counter()
    owner = create_user(EMAIL, PASSWORD)
    feed = create_feed(FEED, owner)
    step = HISTORY_SECONDS / points
    first = now - HISTORY_SECONDS
    chunk = 20_000
    for index, name in enumerate(AXES):
        axis = create_axis(feed, name)
        for start in range(0, points, chunk):
            batch = []
            for i in range(start, min(points, start + chunk)):
                # A slow wave, a faster one and one spike per axis that downsampling must keep.
                spike = 40.0 if i == points // (index + 2) else 0.0
                y = 20 + 5 * math.sin(i / 40_000 + index) + math.sin(i / 700) + spike
                batch.append((axis.id, Sample(first + i * step, round(y, 4))))
            write_points(batch)
    db.close()
    return {"points": points * len(AXES), "seconds": round(time.perf_counter() - started, 1)}


@contextmanager
def running_viewer(settings: Settings) -> Iterator[str]:
    app = create_app(settings)
    server = build_server(settings, app, log_level="warning")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="uvicorn to start")
    url = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, what="the viewer to be ready")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


class Publisher(threading.Thread):
    """A device: `rate` points/s in all, one QoS 1 message per point, round-robin over `topics` (default: the
    graph's axes), x = now."""

    def __init__(self, settings: Settings, rate: float, topics: Sequence[str] | None = None) -> None:
        super().__init__(daemon=True)
        assert settings.broker is not None
        self.broker = settings.broker
        self.rate = rate
        self.topics = list(topics) if topics is not None else [f"feeds/{FEED}/{axis}" for axis in AXES]
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-device", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(1000)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        started = time.monotonic()
        try:
            while not self.halt.is_set():
                due = started + self.sent / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self.halt.wait(delay)
                    continue
                topic = self.topics[self.sent % len(self.topics)]
                y = 20 + 5 * math.sin(time.time() / 30) + (self.sent % 7) / 10
                client.publish(topic, json.dumps({"x": time.time(), "y": round(y, 3)}), qos=1)
                self.sent += 1
        finally:
            client.disconnect()
            client.loop_stop()


def heap(cdp: Any, collect: bool = False) -> float:
    """The page's used JS heap in MB (CDP), after a full garbage collection if `collect`."""
    if collect:
        cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return float(metrics["JSHeapUsedSize"]) / 1e6


def sample_window(pages: dict[str, tuple[Any, Any]], seconds: float, period: float) -> dict[str, list[dict[str, Any]]]:
    """Frame rate, longest frame, heap and chart points every `period` s for `seconds`, for each
    {label: (page, cdp session)}, all sampled in the same instants."""
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label in pages}
    for tab, _ in pages.values():
        tab.evaluate(READ_FRAMES)  # start a fresh count
    first = next(iter(pages.values()))[0]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        first.wait_for_timeout(period * 1000)
        for label, (tab, cdp) in pages.items():
            frames = tab.evaluate(READ_FRAMES)
            sample = {
                "t": round(time.monotonic() - started, 1),
                "fps": round(frames["count"] / (frames["elapsed"] / 1000), 1),
                "longest_frame_ms": round(frames["longest"], 1),
                "heap_mb": round(heap(cdp), 2),
                "points": frames["points"],
            }
            samples[label].append(sample)
            print(f"  {label} t={sample['t']:>6}s fps={sample['fps']:>5} longest={sample['longest_frame_ms']:>6} ms "
                  f"heap={sample['heap_mb']:>6} MB points={sample['points']}", flush=True)
    return samples


def slope_mb_per_min(samples: list[dict[str, Any]]) -> float:
    """Least-squares slope of the heap samples, MB per minute."""
    if len(samples) < 2:
        return 0.0
    ts = [s["t"] / 60 for s in samples]
    hs = [s["heap_mb"] for s in samples]
    mt, mh = statistics.fmean(ts), statistics.fmean(hs)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (h - mh) for t, h in zip(ts, hs, strict=True)) / den if den else 0.0


def trace(browser_context: Any, tab: Any, path: Path, action: Any) -> None:
    """A Chrome performance trace (CDP Tracing) around `action()`, written to `path`."""
    cdp = browser_context.new_cdp_session(tab)
    chunks: list[Any] = []
    done = threading.Event()
    cdp.on("Tracing.dataCollected", lambda params: chunks.extend(params["value"]))
    cdp.on("Tracing.tracingComplete", lambda params: done.set())
    cdp.send("Tracing.start", {
        "categories": "devtools.timeline,v8.execute,disabled-by-default-devtools.timeline,blink.user_timing,loading",
        "transferMode": "ReportEvents",
    })
    action()
    cdp.send("Tracing.end")
    wait_for(lambda: (tab.wait_for_timeout(100), done.is_set())[1], 30, what="the trace")
    path.write_text(json.dumps({"traceEvents": chunks}))
    print(f"  trace: {path}")


def serve(body: bytes) -> Any:
    """A Playwright route handler answering with `body` as JavaScript."""
    return lambda route: route.fulfill(body=body, content_type="application/javascript")


def page_loads(tab: Any, graph: str, count: int) -> list[dict[str, Any]]:
    """Open the graph page `count` times: the page's timing marks (ms since navigation start)."""
    loads = []
    for _ in range(count):
        tab.goto(graph)
        tab.wait_for_function("() => window.rtdpGraphReady !== undefined", timeout=60_000)
        marks = tab.evaluate("() => Object.assign({ready: window.rtdpGraphReady}, window.rtdpGraphTimings || {})")
        marks["points"] = int(tab.get_attribute("#chart", "data-points") or 0)
        loads.append({k: round(v, 1) if isinstance(v, float) else v for k, v in marks.items()})
        print(f"  load: {loads[-1]}", flush=True)
    return loads


def measure(url: str, args: argparse.Namespace, settings: Settings, workdir: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(f"{url}/login")
        tab.fill('input[name="email"]', EMAIL)
        tab.fill('input[name="password"]', PASSWORD)
        tab.click('form button[type="submit"]')
        tab.wait_for_url(f"{url}/")

        graph = f"{url}/feeds/{FEED}/graph"
        if args.baseline_js:
            # First, so the page left open afterwards runs the current graph.js.
            # A/B in the same session: every load alternates between the page's graph.js and the other
            # file, both served through the same interception so their cost is the same.
            own = (ROOT / "viewer" / "static" / "js" / "graph.js").read_bytes()
            other = Path(args.baseline_js).read_bytes()
            ab: dict[str, list[dict[str, Any]]] = {"current": [], "baseline": []}
            for index in range(2 * args.loads):
                name = "current" if index % 2 == 0 else "baseline"
                body = own if name == "current" else other
                tab.route("**/static/js/graph.js", serve(body))
                print(f"  {name}:", end="")
                ab[name] += page_loads(tab, graph, 1)
                tab.unroute("**/static/js/graph.js")
            result["ab"] = ab
            result["ab_ready_ms_median"] = {
                name: round(statistics.median(m["ready"] for m in loads), 1) for name, loads in ab.items()
            }
        result["loads"] = page_loads(tab, graph, args.loads)
        result["ready_ms_median"] = round(statistics.median(m["ready"] for m in result["loads"]), 1)
        if args.trace:
            trace(context, tab, workdir / "trace_load.json", lambda: (
                tab.goto(graph), tab.wait_for_function("() => window.rtdpGraphReady !== undefined", timeout=60_000)))

        if args.minutes <= 0:  # page loads only
            result["page_errors"] = errors
            browser.close()
            return result
        cdp = context.new_cdp_session(tab)
        cdp.send("Performance.enable")
        pages = {"live": (tab, cdp)}
        if args.paired:
            # The baseline page open at the same time, in the same conditions (load, stream, browser);
            # in its own context (window): a second tab of the same one would be hidden, its frames throttled.
            second_context = browser.new_context(viewport={"width": 1100, "height": 720},
                                                 storage_state=context.storage_state())
            second = second_context.new_page()
            second.on("pageerror", lambda exc: errors.append(f"baseline: {exc}"))
            second.route("**/static/js/graph.js", serve(Path(args.baseline_js).read_bytes()))
            second.goto(graph)
            second.wait_for_function("() => window.rtdpGraphReady !== undefined", timeout=60_000)
            other_cdp = second_context.new_cdp_session(second)
            other_cdp.send("Performance.enable")
            pages["baseline"] = (second, other_cdp)
        for page, _ in pages.values():
            page.evaluate(FRAME_COUNTER)
        idle = sample_window({f"idle-{k}" if k != "live" else "idle": v for k, v in pages.items()},
                             min(20.0, args.minutes * 60 / 3), args.sample)
        result["idle"] = idle["idle"]

        publisher = Publisher(settings, args.rate)
        publisher.start()
        tab.wait_for_timeout(3000)  # the first points on the chart
        result["heap_gc_start_mb"] = round(heap(cdp, collect=True), 2)
        live = sample_window(pages, args.minutes * 60, args.sample)
        result["heap_gc_end_mb"] = round(heap(cdp, collect=True), 2)
        if args.trace:
            trace(context, tab, workdir / "trace_live.json", lambda: tab.wait_for_timeout(5000))
        publisher.halt.set()
        publisher.join(10)
        result["live"] = live["live"]
        if args.paired:
            result["paired_baseline"] = {"idle": idle["idle-baseline"], "live": live["baseline"]}
        result["published"] = publisher.sent
        result["published_per_s"] = round(publisher.sent / (args.minutes * 60 + 3), 1)
        result["page_errors"] = errors
        browser.close()
    return result


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    fps = [s["fps"] for s in samples]
    return {
        "fps_min": min(fps),
        "fps_median": statistics.median(fps),
        "longest_frame_ms": max(s["longest_frame_ms"] for s in samples),
        "heap_start_mb": samples[0]["heap_mb"],
        "heap_end_mb": samples[-1]["heap_mb"],
        "heap_max_mb": max(s["heap_mb"] for s in samples),
        "heap_slope_mb_per_min": round(slope_mb_per_min(samples), 3),
        "points_end": samples[-1]["points"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", choices=("dashboard", "graph"), default="dashboard")
    parser.add_argument("--minutes", type=float, default=None, help="of live points (10 for graph, 1 for dashboard)")
    parser.add_argument("--zooms", type=int, default=5, help="dashboard: zooms measured")
    parser.add_argument("--quick", action="store_true", help="1 minute of live points")
    parser.add_argument("--rate", type=float, default=100.0, help="live points per second (all axes)")
    parser.add_argument("--points", type=int, default=1_000_000, help="history points per axis")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--baseline-js", help="also load the page this many times more with this graph.js instead, "
                        "alternating (A/B in the same run)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--paired", action="store_true", help="with --baseline-js: a second page runs it during "
                        "the live phase, sampled at the same instants")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.0
    if args.minutes is None:
        args.minutes = 1.0 if args.page == "dashboard" else 10.0
    if args.paired and not args.baseline_js:
        parser.error("--paired needs --baseline-js")

    # SIGTERM unwinds like Ctrl-C, so Mosquitto is stopped and the directory removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    workdir = Path(tempfile.mkdtemp(prefix="rtdp-graph-bench-"))
    if args.page == "dashboard":
        from bench.dashboard_page import run

        try:
            return run(args, workdir, running_mosquitto, running_viewer)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    load_before = os.getloadavg()
    started = time.time()
    try:
        with running_mosquitto(workdir / "mosquitto") as mosquitto:
            settings = Settings(
                data_dir=workdir / "data", broker=BrokerURL.parse(mosquitto.url), http=HostPort("127.0.0.1", 0)
            )
            print(f"filling 3 x {args.points:,} points ...", flush=True)
            filled = fill(settings, args.points, time.time())
            print(f"  {filled}", flush=True)
            with running_viewer(settings) as url:
                assert settings.broker is not None
                # The database the viewer opened: the one the models are bound to.
                bridge = Bridge(settings, Endpoint.of(settings.broker), "bench-bridge", database_proxy.obj)
                bridge.start()
                wait_for(bridge.ready.is_set, 10, what="the bridge to subscribe")
                try:
                    result = measure(url, args, settings, workdir)
                finally:
                    bridge.stop(timeout=10)
    finally:
        if not args.keep and not args.trace:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    ready = result["ready_ms_median"]
    rows: list[Row] = [
        ("history painted (nav -> first full draw), median", f"{ready:.0f} ms", "<= 1000 ms", ready <= 1000),
    ]
    loads = result["loads"]
    phases = (
        f"request sent at {statistics.median(m['history_start'] for m in loads):.0f} ms, "
        f"3 answers in {statistics.median(m['history_done'] - m['history_start'] for m in loads):.0f} ms, "
        f"drawn {statistics.median(m['drawn'] - m['history_done'] for m in loads):.0f} ms later"
    )
    rows.append(("where the time goes (medians of the page's marks)", phases, "", None))
    if "ab" in result:
        ab = result["ab_ready_ms_median"]
        both = f"{ab['current']:.0f} / {ab['baseline']:.0f} ms"
        rows.append(("A/B alternated: current / --baseline-js, median", both, "", None))
    idle = live = None
    if "live" in result:
        idle, live = summary(result["idle"]), summary(result["live"])
        rows += live_rows(result, idle, live)
    if "paired_baseline" in result:
        base = summary(result["paired_baseline"]["live"])
        rows.append(("paired: --baseline-js page live fps min / median", f"{base['fps_min']} / {base['fps_median']}",
                     "same instants", None))
        rows.append(("paired: --baseline-js page longest frame, heap start -> end",
                     f"{base['longest_frame_ms']} ms, {base['heap_start_mb']} -> {base['heap_end_mb']} MB", "", None))
        rows.append(("paired: --baseline-js page points at the end", str(base["points_end"]), "", None))
    print()
    print("| measure | result | target | met |\n| --- | --- | --- | --- |")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'' if met is None else ('met' if met else '**not met**')} |")
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f}; errors: {result['page_errors']}")

    when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"graph_{when}.json"
    path.write_text(json.dumps({
        "started": when, "args": vars(args), "fill": filled, "load_before": load_before, "load_after": load_after,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "summary": {"idle": idle, "live": live, "ready_ms_median": ready},
        **result,
    }, indent=1))
    print(f"wrote {path}")
    return 0


def live_rows(result: dict[str, Any], idle: dict[str, Any], live: dict[str, Any]) -> list[Row]:
    """The table's rows for the live phase."""
    return [
        ("live fps, min / median", f"{live['fps_min']} / {live['fps_median']}",
         f">= 30 (idle: {idle['fps_min']} / {idle['fps_median']})", live["fps_min"] >= 30),
        ("longest frame, live", f"{live['longest_frame_ms']} ms", f"(idle: {idle['longest_frame_ms']} ms)", None),
        ("JS heap start -> end (samples)", f"{live['heap_start_mb']} -> {live['heap_end_mb']} MB", "bounded", None),
        ("JS heap after GC, start -> end", f"{result['heap_gc_start_mb']} -> {result['heap_gc_end_mb']} MB",
         "bounded", None),
        ("JS heap slope (samples)", f"{live['heap_slope_mb_per_min']} MB/min", "~0", None),
        ("points on the chart at the end", str(live["points_end"]), "", None),
        ("live points published", f"{result['published']} ({result['published_per_s']}/s)", "", None),
    ]


if __name__ == "__main__":
    sys.exit(main())
