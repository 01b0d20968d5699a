"""BufferedSocket: the bytes paho asks for, in order, whatever the read sizes; and paho through it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from rtdp import wire
from rtdp.mqtt import Endpoint, make_client
from rtdp.wire import BufferedSocket, buffer_reads
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_reads_come_from_one_buffer_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = pair
    stream = bytes(range(256)) * 40  # 10,240 bytes, every offset distinct mod 256
    writer.sendall(stream)
    buffered = BufferedSocket(reader)
    got = b""
    sizes = [1, 1, 7, 300, 1, 5000, 2, 10_000]
    for size in sizes:
        chunk = buffered.recv(size)
        assert 0 < len(chunk) <= size
        got += chunk
        assert buffered.pending() == len(stream) - len(got)  # everything came in the first recv
        if len(got) == len(stream):
            break
    assert got == stream


def test_a_short_buffer_gives_a_short_read_then_refills(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "READ_SIZE", 4)
    writer, reader = pair
    writer.sendall(b"abcdefgh")
    buffered = BufferedSocket(reader)
    assert buffered.recv(1) == b"a"
    assert buffered.pending() == 3
    assert buffered.recv(10) == b"bcd"  # what the buffer holds; paho asks again for the rest
    assert buffered.recv(10) == b"efgh"  # asked for more than READ_SIZE: one recv of that size
    assert buffered.pending() == 0


def test_nothing_waiting_and_end_of_stream_pass_through(pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = pair
    reader.setblocking(False)
    buffered = BufferedSocket(reader)
    with pytest.raises(BlockingIOError):
        buffered.recv(1)
    writer.sendall(b"xy")
    writer.close()
    wait_for(lambda: buffered.pending() > 0 or _readable(reader), timeout=5)
    assert buffered.recv(1) == b"x"
    assert buffered.recv(1) == b"y"
    assert buffered.recv(1) == b""
    assert buffered.fileno() == reader.fileno()
    assert buffered.getsockname() == reader.getsockname()  # anything else is the socket's own


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_paho_through_buffered_reads(mosquitto: Mosquitto) -> None:
    """Many small QoS 1 messages (several per buffer) and large ones (several buffers per message) arrive
    whole and in order, with manual acks, across a reconnection (a new socket, buffered again)."""
    endpoint = Endpoint(mosquitto.host, mosquitto.port)
    subscriber = make_client(endpoint, "wire-sub", clean_session=False, manual_ack=True, max_inflight=1000)
    buffer_reads(subscriber)
    received: list[bytes] = []
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append(bytes(message.payload))
        client.ack(message.mid, message.qos)

    subscriber.on_message = on_message
    subscriber.on_connect = lambda client, *args: client.subscribe("wire/#", qos=1)
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    publisher = make_client(endpoint, "wire-pub", max_inflight=1000)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    try:
        assert subscribed.wait(10)
        assert isinstance(subscriber.socket(), BufferedSocket)
        sent = [f"{i}:{'x' * (i % 50)}".encode() for i in range(3000)]
        sent[1000] = b"L" * (3 * wire.READ_SIZE + 17)
        sent[2000] = bytes(range(256)) * 1000
        for payload in sent[:1500]:
            assert publisher.publish("wire/a", payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS
        wait_for(lambda: len(received) >= 1500, timeout=30)
        subscribed.clear()
        subscriber.reconnect()
        assert subscribed.wait(10)
        assert isinstance(subscriber.socket(), BufferedSocket)
        for payload in sent[1500:]:
            assert publisher.publish("wire/a", payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS
        # QoS 1 is at least once: what the reconnection cut off before its PUBACK comes again.
        wait_for(lambda: len(set(received)) >= len(sent), timeout=30)
        assert list(dict.fromkeys(received)) == sent
    finally:
        for client in (publisher, subscriber):
            client.disconnect()
            client.loop_stop()
