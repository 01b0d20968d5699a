"""The packet gate: protocol versions and violations (MQTT 3.1.1 section 4.8: close the connection),
over raw sockets since no client library sends such packets."""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import raw
from tests.broker.clients import connected
from tests.broker.conftest import PASSWORD
from tests.support.embedded import EmbeddedBrokerHandle
from tests.support.env import wait_for

ACCEPTED = b"\x20\x02\x00\x00"
USER = "ep@nothing.com"


def _connected_socket(embedded: EmbeddedBrokerHandle) -> socket.socket:
    sock = raw.open_socket(embedded.host, embedded.port)
    sock.sendall(raw.connect(USER, PASSWORD))
    assert raw.read_exactly(sock, 4) == ACCEPTED
    return sock


def test_an_mqtt5_connect_gets_unacceptable_protocol_version_at_once(embedded: EmbeddedBrokerHandle) -> None:
    """amqtt misparsed the MQTT 5 properties and never answered: clients hung until their own timeout."""
    with raw.open_socket(embedded.host, embedded.port) as sock:
        # MQTT 5: level 5, and a properties length (0) after the keepalive.
        body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + raw.field("v5")
        sock.sendall(raw.packet(0x10, body))
        assert raw.read_until_closed(sock) == b"\x20\x02\x00\x01"


def test_paho_mqtt5_fails_fast(embedded: EmbeddedBrokerHandle) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5", protocol=mqtt.MQTTv5)
    client.username_pw_set(USER, PASSWORD)
    codes: list[int] = []
    client.on_connect = lambda c, u, flags, reason, props: codes.append(reason.value)
    client.on_disconnect = lambda c, u, flags, reason, props: codes.append(-1)
    client.connect(embedded.host, embedded.port, keepalive=60)
    client.loop_start()
    try:
        wait_for(lambda: codes, what="a CONNACK or a close")
    finally:
        client.disconnect()
        client.loop_stop()
    assert codes[0] != 0  # refused, not accepted and not left waiting


def test_mqtt31_is_spoken_as_311(embedded: EmbeddedBrokerHandle) -> None:
    """`MQIsdp` level 3 clients were dropped without a CONNACK; they are accepted as 3.1.1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v31", protocol=mqtt.MQTTv31)
    client.username_pw_set(USER, PASSWORD)
    received: list[bytes] = []
    connacks: list[int] = []
    client.on_connect = lambda c, u, flags, reason, props: connacks.append(reason.value)
    client.on_message = lambda c, u, message: received.append(message.payload)
    client.connect(embedded.host, embedded.port, keepalive=60)
    client.loop_start()
    try:
        wait_for(lambda: connacks, what="CONNACK")
        assert connacks == [0]
        client.subscribe("feeds/manual_feed_a/#", 1)
        with connected(embedded.endpoint(USER, PASSWORD)) as publisher:

            def arrived() -> bool:
                publisher.publish("feeds/manual_feed_a/v31", b"1")
                return bool(received)

            wait_for(arrived, interval=0.2, what="a message to the 3.1 client")
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize(
    "first",
    [raw.publish("feeds/manual_feed_a/a", b"1"), raw.subscribe("feeds/#"), b"\xc0\x00"],
    ids=["publish", "subscribe", "pingreq"],
)
def test_anything_before_connect_closes_the_connection(embedded: EmbeddedBrokerHandle, first: bytes) -> None:
    with raw.open_socket(embedded.host, embedded.port) as sock:
        sock.sendall(first)
        assert raw.read_until_closed(sock) == b""


@pytest.mark.parametrize(
    "violation",
    [
        b"\x30\xff\xff\xff\xff\x01",  # a remaining length of five bytes
        raw.publish("feeds/manual_feed_a/a", b"1", qos=3),
        raw.subscribe("feeds/manual_feed_a/#", qos_byte=3),
        raw.subscribe("feeds/manual_feed_a/#", qos_byte=0x41),  # reserved bits set
        raw.packet(0x80, b"\x00\x01" + raw.field("feeds/#") + b"\x01"),  # SUBSCRIBE with flags 0
        raw.packet(0x82, b"\x00\x01"),  # SUBSCRIBE without a filter
        raw.connect(USER, PASSWORD),  # a second CONNECT
        b"\x20\x02\x00\x00",  # a CONNACK, which only a server sends
        b"\x00\x00",  # reserved packet type 0
    ],
    ids=[
        "remaining-length", "publish-qos3", "subscribe-qos3", "subscribe-reserved-bits", "subscribe-flags",
        "subscribe-empty", "second-connect", "connack", "reserved-type",
    ],
)
def test_a_protocol_violation_closes_the_connection(embedded: EmbeddedBrokerHandle, violation: bytes) -> None:
    """amqtt logged these and went on reading (or granted QoS 3); MQTT 3.1.1 says close."""
    with _connected_socket(embedded) as sock:
        sock.sendall(violation)
        assert raw.read_until_closed(sock) == b""  # no SUBACK, no PUBACK: closed
    wait_for(lambda: embedded.broker._broker is not None and embedded.broker._broker.gate.refused >= 1)


def test_an_oversized_publish_is_refused_before_its_payload_is_read(embedded: EmbeddedBrokerHandle) -> None:
    """A 64 MB PUBLISH was read whole and acknowledged despite the 256 KiB limit. Now the broker closes
    the connection after the header: the rest is never sent, so it cannot have been buffered."""
    limit = 256 * 1024
    with _connected_socket(embedded) as sock:
        topic = raw.field("feeds/manual_feed_a/big")
        header = b"\x32" + raw.encode_length(len(topic) + 2 + 64 * 2**20) + topic + b"\x00\x07"
        sock.sendall(header + b"x" * 1024)
        assert raw.read_until_closed(sock) == b""
    with _connected_socket(embedded) as sock:  # at the limit it is accepted and acknowledged
        sock.sendall(raw.publish("feeds/manual_feed_a/big", b"x" * limit, qos=1, packet_id=7))
        assert raw.read_exactly(sock, 4) == b"\x40\x02\x00\x07"
