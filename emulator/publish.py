"""Sending readings as a real device would: MQTT (QoS 1, `feeds/<feed>/<axis>`, a JSON object with x and y)
or the original's HTTP URL (`GET /service/feed_input.json/<feed>/<axis>?x=&y=` with a Bearer token)."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from emulator.errors import PublishFailed
from rtdp.mqtt import Endpoint, make_client

log = logging.getLogger(__name__)

# Emulated devices send a few messages a second; anything beyond this while the broker is away is dropped
# rather than piling up without bound (paho loses messages past 65,535 in flight).
MAX_QUEUED = 1000


def payload(x: float, y: float | bool) -> bytes:
    """The JSON object a device publishes: explicit x (epoch seconds), so a redelivery is idempotent."""
    return json.dumps({"x": x, "y": y}, separators=(",", ":")).encode()


def topic(feed: str, axis: str) -> str:
    return f"feeds/{feed}/{axis}"


class Publisher(Protocol):
    def open(self) -> None: ...

    def publish(self, feed: str, axis: str, x: float, y: float | bool) -> None: ...

    def close(self) -> None: ...


class MqttPublisher:
    """A paho client with its own network thread; reconnects by itself while the emulator runs."""

    def __init__(self, endpoint: Endpoint, client_id: str, *, qos: int = 1) -> None:
        self.endpoint = endpoint
        self.qos = qos
        self.connected = threading.Event()
        # Publishes handed to paho and PUBACKs received: close() waits for the difference to drain.
        self._counts = threading.Condition()
        self.sent = 0
        self.acked = 0
        self.client = make_client(endpoint, client_id, clean_session=True, max_inflight=20)
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("emulator: broker %s:%s refused the connection: %s", self.endpoint.host, self.endpoint.port,
                        reason)
            return
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._counts:
            self.acked += 1
            self._counts.notify_all()

    def open(self) -> None:
        # connect_async + loop_start: a broker that is not up yet (rtdp serve starts it beside us) is retried.
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()

    def publish(self, feed: str, axis: str, x: float, y: float | bool) -> None:
        counted = self.qos > 0
        if counted:
            # Counted before the call: the PUBACK may arrive on paho's thread before publish() returns.
            # The lock is not held across publish(): paho's own callback lock would make that a deadlock.
            with self._counts:
                self.sent += 1
        info = self.client.publish(topic(feed, axis), payload(x, y), qos=self.qos)
        # NO_CONN with QoS 1 means queued for the reconnect, which is what a device would do.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            if counted:
                with self._counts:
                    self.sent -= 1
            raise PublishFailed(f"publish to {topic(feed, axis)} failed: {mqtt.error_string(info.rc)}")

    def close(self, drain: float = 2.0) -> None:
        """Give what is in flight a moment to be acknowledged (a stop loses nothing), then disconnect."""
        if self.connected.is_set():
            with self._counts:
                self._counts.wait_for(lambda: self.acked >= self.sent, timeout=drain)
        self.client.disconnect()
        self.client.loop_stop()


class HttpPublisher:
    """One GET per reading to the original's URL, with the token as a Bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def url(self, feed: str, axis: str, x: float, y: float | bool) -> str:
        y_text = ("true" if y else "false") if isinstance(y, bool) else repr(y)
        query = urllib.parse.urlencode({"x": repr(x), "y": y_text})
        return f"{self.base_url}/service/feed_input.json/{feed}/{axis}?{query}"

    def open(self) -> None:
        pass

    def publish(self, feed: str, axis: str, x: float, y: float | bool) -> None:
        request = urllib.request.Request(
            self.url(feed, axis, x, y), headers={"Authorization": f"Bearer {self.token}"}, method="GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()[:200].decode("utf-8", "replace")
            exc.close()
            raise PublishFailed(f"{feed}/{axis}: HTTP {exc.code}: {body}", status=exc.code) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise PublishFailed(f"{feed}/{axis}: {self.base_url} unreachable: {exc}") from None

    def close(self) -> None:
        pass
