"""Small synchronous paho clients for broker tests: connect, subscribe, publish, collect messages."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from rtdp.mqtt import Endpoint, make_client
from tests.support.env import require, wait_for

_ids = itertools.count()


class TestClient:
    """A connected paho client that records what it receives (topic, payload)."""

    __test__ = False  # not a pytest class

    def __init__(
        self, endpoint: Endpoint, client_id: str | None = None, *, clean_session: bool = True, websocket: bool = False
    ) -> None:
        client_id = client_id or f"test-{next(_ids)}"
        if websocket:  # MQTT over WebSockets (`--mqtt-ws`)
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id, clean_session, protocol=mqtt.MQTTv311, transport="websockets"
            )
            self.client.username_pw_set(endpoint.username, endpoint.password)
        else:
            self.client = make_client(endpoint, client_id, clean_session=clean_session)
        self.connack: ReasonCode | None = None
        self.session_present: bool | None = None  # the CONNACK's flag: the broker had a session for it
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.full: list[mqtt.MQTTMessage] = []  # the same messages with their QoS and flags
        self.granted: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connack = reason
        self.session_present = bool(flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))
            self.full.append(message)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        self.granted[mid] = [code.value for code in codes]

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS or 0x80 for a refusal."""
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        codes = wait_for(lambda: self.granted.get(mid), what=f"SUBACK for {topic}")
        return codes[0]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the PUBACK (amqtt acknowledges refused publishes too)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(10)
        assert info.is_published()

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(topic, payload) for topic, payload, _ in self.messages]

    def wait_message(self, topic: str, payload: bytes) -> None:
        wait_for(lambda: (topic, payload) in self.received(), what=f"{topic} {payload!r}")


def open_client(
    endpoint: Endpoint, client_id: str | None = None, *, clean_session: bool = True, websocket: bool = False
) -> TestClient:
    """Connect and wait for the CONNACK (accepted or refused)."""
    test = TestClient(endpoint, client_id, clean_session=clean_session, websocket=websocket)
    test.client.connect(endpoint.host, endpoint.port, keepalive=30)
    test.client.loop_start()
    wait_for(lambda: test.connack is not None or test.disconnected.is_set(), what="CONNACK")
    return test


@contextmanager
def connected(
    endpoint: Endpoint, client_id: str | None = None, *, clean_session: bool = True, websocket: bool = False
) -> Iterator[TestClient]:
    """A client that must be accepted; disconnected at the end."""
    test = open_client(endpoint, client_id, clean_session=clean_session, websocket=websocket)
    try:
        assert test.connack is not None and not test.connack.is_failure, f"refused: {test.connack}"
        yield test
    finally:
        close(test)


def close(test: TestClient) -> None:
    test.client.disconnect()
    test.client.loop_stop()


def login_result(endpoint: Endpoint, client_id: str | None = None) -> ReasonCode | None:
    """The CONNACK reason code for these credentials (None if the connection dropped without one)."""
    test = open_client(endpoint, client_id)
    close(test)
    return test.connack


def publish_lines(endpoint: Endpoint, topic: str, lines: list[str]) -> None:
    """One `mosquitto_pub -l -q 1` sending `lines` and exiting right after the last PUBACK."""
    require(shutil.which("mosquitto_pub") is not None, "mosquitto_pub is not installed")
    command = [
        "mosquitto_pub", "-h", endpoint.host, "-p", str(endpoint.port), "-q", "1", "-t", topic, "-l",
        "-u", endpoint.username or "", "-P", endpoint.password or "",
    ]
    stdin = "".join(f"{line}\n" for line in lines).encode()
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def will_client(endpoint: Endpoint, topic: str, keepalive: int = 30) -> TestClient:
    """A client with a will on `topic`, connected (or refused)."""
    test = TestClient(endpoint)
    test.client.will_set(topic, b"will", qos=1)
    test.client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
    test.client.loop_start()
    wait_for(lambda: test.connack is not None or test.disconnected.is_set(), what="CONNACK")
    return test


def drop(test: TestClient) -> None:
    """The connection dies without a DISCONNECT, so the broker fires the will."""
    test.client.loop_stop()
    sock = test.client.socket()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
