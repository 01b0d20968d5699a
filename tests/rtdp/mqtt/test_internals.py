"""rtdp.mqtt.internals: the private paho names it needs exist; PublishReader hands over the packets in order,
whatever the read sizes; paho through it and send_pubacks against a real broker."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from rtdp.mqtt import Endpoint, make_client
from rtdp.mqtt import internals as wire
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto


def test_every_patched_paho_name_exists() -> None:
    """pyproject pins paho's minor version; this says which private name a new paho lacks."""
    assert wire.missing_names() == []


def test_a_missing_name_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(mqtt.Client, "_packet_queue")
    assert wire.missing_names() == ["Client._packet_queue"]


def _payloads() -> list[bytes]:
    """3,000 payloads: small ones (several per read buffer) and two large ones (several buffers each)."""
    sent = [f"{i}:{'x' * (i % 50)}".encode() for i in range(3000)]
    sent[1000] = b"L" * (3 * wire.READ_SIZE + 17)
    sent[2000] = bytes(range(256)) * 1000
    return sent


def _start(subscriber: mqtt.Client, mosquitto: Mosquitto, publisher_id: str) -> tuple[mqtt.Client, threading.Event]:
    """Connect `subscriber` (to wire/#, QoS 1) and a publisher; the event is set at each SUBACK."""
    subscribed = threading.Event()
    subscriber.on_connect = lambda client, *args: client.subscribe("wire/#", qos=1)
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    publisher = make_client(Endpoint(mosquitto.host, mosquitto.port), publisher_id, max_inflight=1000)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    return publisher, subscribed


# ---------------------------------------------------------------- PublishReader


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish(topic: bytes, payload: bytes, qos: int, mid: int = 0, retain: bool = False) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + _length(len(body)) + body


class _Sock:
    """What paho's _sock_recv reads from: fixed chunks, then BlockingIOError."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        assert len(chunk) <= size
        return chunk

    def close(self) -> None:  # paho closes its socket when the client is collected
        pass


def _reader(chunks: list[bytes]) -> tuple[mqtt.Client, list[wire.Publish], list[int]]:
    client = make_client(Endpoint("127.0.0.1", 1), "reader", manual_ack=True)
    got: list[wire.Publish] = []
    handled: list[int] = []  # commands paho's own handling saw
    wire.read_publishes(client, got.extend)
    client._sock = _Sock(chunks)  # type: ignore[assignment]

    def handle() -> mqtt.MQTTErrorCode:
        handled.append(client._in_packet["command"])
        assert bytes(client._in_packet["packet"]) == b"\x00\x07"  # the PUBACK's body: message id 7
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_handle = handle  # type: ignore[method-assign]
    return client, got, handled


def test_publish_reader_parses_packets_split_anywhere() -> None:
    big = bytes(range(256)) * 700  # 179,200 bytes: a 3-byte remaining length, longer than one read
    packets = [
        _publish(b"feeds/f/a", b"1", 1, mid=1),
        _publish(b"feeds/f/b", b"", 0, retain=True),
        b"\x40\x02\x00\x07",  # a PUBACK (for one of our notices): paho's
        _publish("feeds/f/é".encode(), big, 1, mid=65535),
        _publish(b"t", b"x" * 127, 1, mid=2),  # remaining length 132: two bytes
    ]
    expected = [
        wire.Publish(b"feeds/f/a", b"1", 1, 1, False),
        wire.Publish(b"feeds/f/b", b"", 0, 0, True),
        wire.Publish("feeds/f/é".encode(), big, 65535, 1, False),
        wire.Publish(b"t", b"x" * 127, 2, 1, False),
    ]
    stream = b"".join(packets)
    for cuts in ([], [1], [2, 3, 15, 16, 17], list(range(1, 200)), [len(stream) - 1]):
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        # paho reads again as long as the socket is readable; here, until the chunks run out
        client, got, handled = _reader([c for chunk in chunks for c in _split(chunk, wire.READ_SIZE)])
        while client._sock.chunks:  # type: ignore[union-attr]
            assert client._packet_read() == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        assert got == expected
        assert handled == [0x40]


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def test_publish_reader_refuses_malformed_packets() -> None:
    bad_length = b"\x32\xff\xff\xff\xff\x01"  # a remaining length of five bytes
    short_topic = b"\x32\x03\x00\x09a"  # the topic runs past the packet's end
    for stream in (bad_length, short_topic):
        client, got, _ = _reader([stream])
        assert client._packet_read() == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        assert got == []


def test_publish_reader_reports_the_end_of_the_stream() -> None:
    client, got, _ = _reader([_publish(b"a", b"1", 1, mid=3), b""])
    assert client._packet_read() == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
    assert client._packet_read() == mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert got == [wire.Publish(b"a", b"1", 3, 1, False)]


def test_paho_through_the_publish_reader(mosquitto: Mosquitto) -> None:
    """Through a real broker: QoS 0 and 1, small and large messages arrive whole and in order; acks sent
    with send_pubacks; after a reconnection (a new socket) the unacknowledged ones come again."""
    endpoint = Endpoint(mosquitto.host, mosquitto.port)
    subscriber = make_client(endpoint, "reader-sub", clean_session=False, manual_ack=True, max_inflight=1000)
    received: list[wire.Publish] = []
    lock = threading.Lock()
    acking = threading.Event()
    acking.set()

    def deliver(publishes: list[wire.Publish]) -> None:
        with lock:
            received.extend(publishes)
        if acking.is_set():
            wire.send_pubacks(subscriber, [p.mid for p in publishes if p.qos == 1])

    wire.read_publishes(subscriber, deliver)
    publisher, subscribed = _start(subscriber, mosquitto, "reader-pub")
    try:
        assert subscribed.wait(10)
        sent = _payloads()
        for index, payload in enumerate(sent[:2500]):
            assert publisher.publish("wire/a", payload, qos=index % 2).rc == mqtt.MQTT_ERR_SUCCESS
        wait_for(lambda: len(received) >= 2500, timeout=30)
        for qos in (0, 1):  # in order within each QoS (MQTT orders nothing across them)
            assert [p.payload for p in received if p.qos == qos] == sent[qos:2500:2]
        assert all(p.topic == b"wire/a" for p in received)
        # Unacknowledged QoS 1 messages (fewer than the broker's in-flight window of 1000) come again
        # after a reconnection; acknowledged ones do not.
        acking.clear()
        for payload in sent[2500:]:
            assert publisher.publish("wire/a", payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS
        wait_for(lambda: len(received) >= 3000, timeout=30)
        assert [p.payload for p in received[2500:]] == sent[2500:]
        acking.set()
        subscribed.clear()
        subscriber.reconnect()
        assert subscribed.wait(10)
        wait_for(lambda: len(received) >= 3500, timeout=30)
        assert [p.payload for p in received[3000:]] == sent[2500:]
        publisher.publish("wire/end", b"end", qos=1).wait_for_publish(10)
        wait_for(lambda: received[-1].topic == b"wire/end", timeout=10)
        assert len(received) == 3501
    finally:
        for client in (publisher, subscriber):
            client.disconnect()
            client.loop_stop()


# ---------------------------------------------------------------- one layer

ROOT = Path(__file__).resolve().parents[3]
PRODUCTION = ("rtdp", "broker", "bridge", "viewer", "emulator")


def _production_files() -> list[Path]:
    return [path for package in PRODUCTION for path in sorted((ROOT / package).rglob("*.py"))]


def test_only_the_mqtt_layer_imports_paho() -> None:
    importers = set()
    for path in _production_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "paho" for name in names):
                importers.add(path.relative_to(ROOT).parent.as_posix())
    assert importers == {"rtdp/mqtt"}


def test_only_internals_uses_the_patched_names() -> None:
    private = {qualified.split(".")[1] for qualified in wire.PATCHED}
    users = {
        path.relative_to(ROOT).as_posix()
        for path in _production_files()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        # An object's own attribute of the same name (self._topic) is not paho's.
        if isinstance(node, ast.Attribute) and node.attr in private
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    }
    assert users == {"rtdp/mqtt/internals.py"}
