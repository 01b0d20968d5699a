"""The live graph resumes without gaps or duplicates after the server drops its stream: a burst
overflows a tiny SSE queue, the viewer drops the browser, which reconnects with the last id it has
and gets the rest replayed from the database."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Page, expect

from bridge.service import Bridge
from rtdp.accounts import create_user
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed
from tests.browser.conftest import ConsoleErrors
from tests.browser.test_pages import chart_points, publish, sign_in
from tests.viewer.conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Four queued events per client: any burst drops the browser.
    return settings.replace(sse_queue=4)


def stream_counter(tab: Page, name: str) -> int:
    return int(tab.evaluate(f"() => document.documentElement.dataset.{name} || '0'"))


def test_dropped_stream_resumes_from_the_last_id(
    live_server: LiveServer, settings: Settings, bridge: Bridge, page: tuple[Page, ConsoleErrors]
) -> None:
    tab, errors = page
    owner = create_user("ep@nothing.com", "a-long-password")
    create_axis(create_feed("burst", owner), "a")
    sign_in(tab, live_server.url, "ep@nothing.com", "a-long-password")
    tab.goto(f"{live_server.url}/feeds/burst/graph")
    expect(tab.locator("#live-state")).to_have_text("live", timeout=15000)

    now = time.time()
    for start in (0, 150):  # two bursts, so the second drop happens after events were received
        batch = [{"x": now - 1000 + i, "y": i % 17} for i in range(start, start + 150)]
        publish(settings, [("feeds/burst/a", json.dumps(batch))])
        tab.wait_for_function(
            f"() => Number(document.querySelector('#chart').dataset.points) >= {start + 150}", timeout=20000
        )
    assert chart_points(tab) == 300
    assert stream_counter(tab, "streamConnects") >= 2  # it was dropped and came back
    # Every point arrived once through the stream (replayed after the drop), none twice.
    assert stream_counter(tab, "streamEvents") == 300
    assert errors == [], errors
