"""Browser fixtures: the Debian chromium driven by Playwright, against the real viewer and bridge.

Never `playwright install`: the browser is /usr/bin/chromium (apt-get install chromium).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.service import Bridge
from rtdp.models import database_proxy
from rtdp.mqtt import Endpoint
from rtdp.settings import Settings
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.env import require, wait_for
from tests.viewer.conftest import LiveServer, live_server, settings  # noqa: F401 -- fixtures reused here
from viewer.pages import STATIC

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover -- the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    require(sync_playwright is not None, "playwright is not installed (pip install -e .[test])")
    require(CHROMIUM is not None, "chromium is not installed (apt-get install chromium)")
    require(
        (STATIC / "vendor" / "uPlot.iife.min.js").is_file(),
        "front-end assets not built (npm ci && python scripts/build_assets.py)",
    )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class ConsoleErrors(list[str]):
    """Console errors and uncaught exceptions a page produced."""


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, ConsoleErrors]]:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    tab = context.new_page()
    errors = ConsoleErrors()

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} at {message.location}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    yield tab, errors
    context.close()


@pytest.fixture
def bridge(live_server: LiveServer, settings: Settings) -> Iterator[Bridge]:  # noqa: F811 -- pytest fixtures
    """The real bridge on the same broker and database: MQTT in, stored, rtdp/stored/<feed> out."""
    assert settings.broker is not None
    # The database the live server opened: the one the models are bound to.
    running = Bridge(settings, Endpoint.of(settings.broker), "browser-test-bridge", database_proxy.obj)
    running.start()
    wait_for(running.ready.is_set, 10, what="the bridge to subscribe")
    yield running
    running.stop(timeout=10)
