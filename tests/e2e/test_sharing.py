"""Removing a share takes effect at once on what is already open: `rtdp serve` as a subprocess, an SSE
stream and an MQTT subscription of a user reading through the share, and the share removed by
`rtdp share remove` from another process (the CLI), as an administrator would."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.test_serve import AP, EP, RTDP, Served, running_serve
from tests.support.env import free_port, wait_for

FEED = "manual_feed_a"  # ep's, int y
OWN = "manual_feed_aj"  # ap's own: a sentinel that ap always receives


class Subscriber:
    """ap's MQTT client subscribed to every feed topic (the broker checks each delivery)."""

    def __init__(self, served: Served) -> None:
        self.received: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ap-watcher", protocol=mqtt.MQTTv311)
        self.client.username_pw_set(*AP)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", served.mqtt_port)
        self.client.subscribe("feeds/+/+", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((message.topic.split("/")[1], message.payload.decode()))

    def got(self, feed: str, payload: str) -> bool:
        with self.lock:
            return (feed, payload) in self.received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Stream:
    """ap's SSE stream of ep's feed, read in a thread until the server ends it."""

    def __init__(self, served: Served) -> None:
        self.values: list[int] = []
        self.status = 0
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(served,), daemon=True)
        self.thread.start()

    def _read(self, served: Served) -> None:
        try:
            with httpx.stream("GET", f"{served.web}/api/v1/feeds/{FEED}/stream", auth=AP, timeout=30) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.values.append(json.loads(line[5:])["y"])
        finally:
            self.ended.set()


def test_removing_a_share_stops_an_open_stream_and_subscription_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streams also check their reader again every heartbeat: far away here, so only the change can end it.
    monkeypatch.setenv("RTDP_SSE_HEARTBEAT", "600")
    # Cached decisions expire on their own after decision_ttl: far away too.
    monkeypatch.setenv("RTDP_DECISION_TTL", "600")
    monkeypatch.setenv("RTDP_CREDENTIAL_TTL", "600")
    mqtt_port = free_port()
    with running_serve(tmp_path, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}") as served:
        shared = httpx.post(f"{served.web}/api/v1/feeds/{FEED}/shares", json={"user": AP[0]}, auth=EP, timeout=10)
        assert shared.status_code == 201, shared.text
        subscriber = Subscriber(served)
        stream = Stream(served)
        try:
            # While the share stands, both deliver ep's points to ap.
            value = iter(range(100, 10_000))

            def both_deliver() -> bool:
                y = next(value)
                served.pub(f"feeds/{FEED}/axis_a00", str(y))
                return wait_for(lambda: subscriber.got(FEED, str(y)), what="MQTT delivery") and y in stream.values

            wait_for(both_deliver, timeout=30, interval=0.2, what="ap's stream and subscription to deliver")
            assert stream.status == 200 and not stream.ended.is_set()

            removed = subprocess.run(
                [*RTDP, "share", "remove", FEED, str(shared.json()["id"]), "--data-dir", str(served.data_dir)],
                capture_output=True, text=True, timeout=60,
            )
            assert removed.returncode == 0, removed.stderr
            assert "no longer may read" in removed.stdout

            # The stream ends by itself, long before its next heartbeat.
            assert stream.ended.wait(60), "the SSE stream was not ended"
            fresh = httpx.get(f"{served.web}/api/v1/feeds/{FEED}/stream", auth=AP, timeout=10)
            assert fresh.status_code == 403

            # The subscription stays, but ep's points no longer reach it; ap's own still do.
            def round_without_eps_point() -> bool:
                y = next(value)
                served.pub(f"feeds/{FEED}/axis_a00", str(y))
                served.pub(f"feeds/{OWN}/axis_aj_00", str(y), auth=AP)
                wait_for(lambda: subscriber.got(OWN, str(y)), what="ap's own point")
                return not subscriber.got(FEED, str(y))

            wait_for(round_without_eps_point, timeout=60, interval=0.1, what="delivery of ep's points to stop")
            assert round_without_eps_point()
        finally:
            subscriber.close()
