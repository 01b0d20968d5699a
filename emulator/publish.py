"""Sending readings as a real device would: MQTT (QoS 1, `feeds/<feed>/<axis>`, a JSON object with x and y)
or the original's HTTP URL (`GET /service/feed_input.json/<feed>/<axis>?x=&y=` with a Bearer token)."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

from emulator.errors import PublishFailed
from rtdp.mqtt import Client, Endpoint, LoopThread, MqttError

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
    """An MQTT client on an event-loop thread of its own; reconnects by itself while the emulator runs, and
    keeps what it publishes meanwhile (up to MAX_QUEUED) for the next connection, as a device would."""

    def __init__(self, endpoint: Endpoint, client_id: str, *, qos: int = 1, loop: str = "auto") -> None:
        self.endpoint = endpoint
        self.qos = qos
        self._thread = LoopThread("rtdp-emulator-mqtt", loop)
        self.client = Client(
            endpoint,
            client_id,
            max_inflight=20,
            max_queued=MAX_QUEUED,
            resend=True,
            name="emulator",
        )
        self.connected = self.client.up

    def open(self) -> None:
        # A broker that is not up yet (rtdp serve starts it beside us) is retried.
        self._thread.start()
        self._thread.run(self.client.start)

    def publish(self, feed: str, axis: str, x: float, y: float | bool) -> None:
        try:
            self._thread.run(self.client.publish, topic(feed, axis), payload(x, y), self.qos)
        except MqttError as exc:
            raise PublishFailed(exc.message) from None

    def close(self, drain: float = 2.0) -> None:
        """Give what is in flight a moment to be acknowledged (a stop loses nothing), then disconnect."""
        self._thread.run_async(self.client.stop(drain=drain))
        self._thread.stop()


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
