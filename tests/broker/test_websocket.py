"""MQTT over WebSockets (`--mqtt-ws`): the same broker, authentication and ACL as over TCP."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from rtdp.accounts import ServiceAccount
from rtdp.mqtt import Endpoint
from rtdp.settings import HostPort, Settings
from tests.broker import raw
from tests.broker.clients import close, connected, open_client
from tests.broker.conftest import PASSWORD, World
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import require

EP = "ep@nothing.com"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws_broker(world: World, settings: Settings, service: ServiceAccount) -> Iterator[EmbeddedBrokerHandle]:
    with running_embedded_broker(settings.replace(mqtt_ws=HostPort("127.0.0.1", 0)), service) as handle:
        yield handle


def _ws_endpoint(handle: EmbeddedBrokerHandle, password: str = PASSWORD) -> Endpoint:
    address = handle.broker.ws_address
    assert address is not None and address.port != 0
    return Endpoint(address.host, address.port, EP, password)


def test_off_unless_asked_and_on_loopback_without_a_host() -> None:
    assert Settings.build(env={}).mqtt_ws is None
    assert Settings.build(env={"RTDP_MQTT_WS": ":8083"}).mqtt_ws == HostPort("127.0.0.1", 8083)


def test_publish_and_subscribe_over_websockets(ws_broker: EmbeddedBrokerHandle) -> None:
    tcp_endpoint = ws_broker.endpoint(EP, PASSWORD)
    with connected(_ws_endpoint(ws_broker), websocket=True) as browser, connected(tcp_endpoint) as tcp:
        assert browser.subscribe("feeds/manual_feed_a/+") == 1
        assert browser.subscribe("feeds/manual_feed_aj/+") == 0x80  # ap's feed: the same ACL
        tcp.publish("feeds/manual_feed_a/x", b"to-browser")
        browser.wait_message("feeds/manual_feed_a/x", b"to-browser")
        assert tcp.subscribe("feeds/manual_feed_a/y") == 1
        browser.publish("feeds/manual_feed_a/y", b"from-browser")
        tcp.wait_message("feeds/manual_feed_a/y", b"from-browser")


def test_websocket_logins_are_checked(ws_broker: EmbeddedBrokerHandle) -> None:
    refused = open_client(_ws_endpoint(ws_broker, "wrong"), websocket=True)
    close(refused)
    assert refused.connack is None or refused.connack.is_failure


def test_the_packet_gate_guards_websockets_too(ws_broker: EmbeddedBrokerHandle) -> None:
    """An MQTT 5 CONNECT over a WebSocket: CONNACK 1, then the close (over TCP in test_gate)."""
    endpoint = _ws_endpoint(ws_broker)

    async def attempt() -> list[bytes]:
        async with connect(f"ws://{endpoint.host}:{endpoint.port}/mqtt", subprotocols=[Subprotocol("mqtt")]) as ws:
            await ws.send(raw.packet(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + raw.field("v5")))
            return [message if isinstance(message, bytes) else message.encode() async for message in ws]

    assert b"".join(asyncio.run(attempt())) == b"\x20\x02\x00\x01"


JS = Path(__file__).parent / "js" / "mqttjs_roundtrip.js"
MQTTJS = REPO / "node_modules" / "mqtt"


def _ws_url(handle: EmbeddedBrokerHandle) -> str:
    endpoint = _ws_endpoint(handle)
    return f"ws://{endpoint.host}:{endpoint.port}/mqtt"


def test_mqttjs_in_node(ws_broker: EmbeddedBrokerHandle) -> None:
    require(shutil.which("node") is not None and MQTTJS.is_dir(), "node or MQTT.js missing (npm ci)")
    done = subprocess.run(
        ["node", str(JS), _ws_url(ws_broker), EP, PASSWORD, "feeds/manual_feed_a/js"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NODE_PATH": str(REPO / "node_modules")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "feeds/manual_feed_a/js from-mqttjs 1"


def test_mqttjs_in_chromium(ws_broker: EmbeddedBrokerHandle) -> None:
    """The case the listener is for: MQTT.js in a web page."""
    require(CHROMIUM is not None, "chromium is not installed (apt-get install chromium)")
    require(MQTTJS.is_dir(), "MQTT.js missing (npm ci)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_script_tag(path=str(MQTTJS / "dist" / "mqtt.min.js"))
            page.add_script_tag(content=JS.read_text())
            line = page.evaluate(
                "([url, user, password, topic]) => roundtrip(mqtt, url, user, password, topic)",
                [_ws_url(ws_broker), EP, PASSWORD, "feeds/manual_feed_a/browser"],
            )
        finally:
            browser.close()
    assert line == "feeds/manual_feed_a/browser from-mqttjs 1"
