"""The cases of the Eclipse Paho interoperability suite's client tests, written anew for rtdp: topics under
`feeds/`, users with tokens, run against the embedded broker and against Mosquitto side by side.

The embedded broker must pass every case. Where Mosquitto 2.0 answers otherwise (within what MQTT
3.1.1 allows, or for reasons of its ACL), its parametrisation is an xfail that says why.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtdp.accounts import ServiceAccount
from rtdp.mosquitto import write_mosquitto_files
from rtdp.mqtt import Endpoint
from rtdp.settings import Settings
from tests.broker import raw
from tests.broker.clients import TestClient, close, connected, drop, open_client, will_client
from tests.broker.conftest import World, token_for
from tests.support.embedded import running_embedded_broker
from tests.support.env import require, wait_for
from tests.support.mosquitto import AS_ROOT, MOSQUITTO, running_mosquitto

FEED = "feeds/manual_feed_a"  # ep's feed
OTHERS = "feeds/manual_feed_aj"  # ap's feed


@dataclass(frozen=True)
class Target:
    """A running broker and who may use it: ep and ap with tokens, and rtdp's service account."""

    kind: str
    host: str
    port: int
    ep: Endpoint
    ap: Endpoint
    service: Endpoint


@pytest.fixture(params=["embedded", "mosquitto"])
def target(
    request: pytest.FixtureRequest, world: World, settings: Settings, service: ServiceAccount, tmp_path: Path
) -> Iterator[Target]:
    # Token users: the embedded broker takes any username with a token, Mosquitto the token's prefix.
    ep, ap = token_for(world.ep), token_for(world.ap)
    if request.param == "embedded":
        with running_embedded_broker(settings, service) as broker:
            yield _target("embedded", broker.host, broker.port, ep, ap, service)
        return
    require(MOSQUITTO is not None, "mosquitto is not installed (apt-get install mosquitto)")
    files = write_mosquitto_files(settings)
    extra = f"{AS_ROOT}password_file {files.passwd}\nacl_file {files.acl}\n"
    with running_mosquitto(tmp_path / "mosquitto", extra_config=extra, anonymous=False) as mosquitto:
        yield _target("mosquitto", mosquitto.host, mosquitto.port, ep, ap, service)


def _target(kind: str, host: str, port: int, ep: str, ap: str, service: ServiceAccount) -> Target:
    return Target(
        kind,
        host,
        port,
        Endpoint(host, port, ep[:12], ep),
        Endpoint(host, port, ap[:12], ap),
        Endpoint(host, port, service.username, service.password),
    )


def differs_on_mosquitto(request: pytest.FixtureRequest, target: Target, reason: str) -> None:
    if target.kind == "mosquitto":
        request.applymarker(pytest.mark.xfail(reason=f"Mosquitto 2.0: {reason}", strict=True))


def marker(publisher: TestClient, watcher: TestClient, topic: str = f"{FEED}/marker") -> None:
    """A message from the same publisher after the ones under test: once it arrived, they would have."""
    publisher.publish(topic, b"marker", qos=1)
    watcher.wait_message(topic, b"marker")


def qos_of(client: TestClient, topic: str) -> list[int]:
    return sorted(message.qos for message in list(client.full) if message.topic == topic)


def raw_session(target: Target, client_id: str, *, clean: bool) -> tuple[socket.socket, int]:
    """A raw connection for ep: (socket, the CONNACK's session-present flag)."""
    sock = raw.open_socket(target.host, target.port)
    assert target.ep.username is not None and target.ep.password is not None
    sock.sendall(raw.connect(target.ep.username, target.ep.password, client_id=client_id, clean=clean))
    first, body = raw.read_packet(sock)
    assert first == 0x20 and body[1] == 0, f"CONNACK {body!r}"
    return sock, body[0]


# -- the cases -------------------------------------------------------------------------------------------


def test_basic(target: Target) -> None:
    """Publish at QoS 0, 1, 2 to a QoS 2 subscription: each arrives once, at the QoS it was published with."""
    with connected(target.ep) as client:
        assert client.subscribe(f"{FEED}/+", qos=2) == 2
        for qos in (0, 1, 2):
            client.publish(f"{FEED}/basic", f"qos{qos}".encode(), qos=qos)
        wait_for(lambda: len(client.received()) >= 3, what="three messages")
        marker(client, client)
        assert sorted(client.received()) == [(f"{FEED}/basic", b"qos%d" % q) for q in (0, 1, 2)] + [
            (f"{FEED}/marker", b"marker")
        ]
        assert qos_of(client, f"{FEED}/basic") == [0, 1, 2]


def test_a_qos0_publish_reaches_a_qos1_subscription_at_qos0(target: Target) -> None:
    """MQTT 3.1.1 section 3.8.4: min(published, granted). amqtt sent it at the subscription's QoS 1."""
    with connected(target.ep) as subscriber, connected(target.ep) as publisher:
        assert subscriber.subscribe(f"{FEED}/+", qos=1) == 1
        publisher.publish(f"{FEED}/q0", b"0", qos=0)
        publisher.publish(f"{FEED}/q2", b"2", qos=2)
        marker(publisher, subscriber)
        assert qos_of(subscriber, f"{FEED}/q0") == [0]
        assert qos_of(subscriber, f"{FEED}/q2") == [1]


def test_retained_messages(target: Target) -> None:
    """Retained at QoS 0, 1, 2 reach a later subscriber with the retain flag; empty payloads clear them."""
    topics = [f"{FEED}/retained{qos}" for qos in (0, 1, 2)]
    with connected(target.ep) as publisher:
        for qos, topic in enumerate(topics):
            publisher.publish(topic, b"kept", qos=qos, retain=True)
        assert publisher.subscribe(f"{FEED}/marker") == 1
        marker(publisher, publisher)  # the retained publishes before it have been handled
    with connected(target.ep) as subscriber:
        subscriber.subscribe(f"{FEED}/+", qos=2)
        wait_for(lambda: len(subscriber.received()) >= 3, what="three retained messages")
        assert sorted(subscriber.messages) == [(topic, b"kept", True) for topic in topics]
        for topic in topics:  # clearing: a retained message with an empty payload (mosquitto_pub -r -n)
            subscriber.publish(topic, b"", qos=1, retain=True)
        marker(subscriber, subscriber)  # the clearing publishes before it have been handled
    with connected(target.ep) as later, connected(target.ep) as publisher:
        later.subscribe(f"{FEED}/+", qos=2)
        marker(publisher, later)
        assert later.received() == [(f"{FEED}/marker", b"marker")]


def test_offline_message_queueing(target: Target) -> None:
    """QoS 1 and 2 messages for an offline persistent session arrive at its reconnect (QoS 0 may)."""
    with connected(target.ep, "offline-sub", clean_session=False) as subscriber:
        subscriber.subscribe(f"{FEED}/+", qos=2)
    with connected(target.ep) as publisher:
        for qos in (0, 1, 2):
            publisher.publish(f"{FEED}/offline", f"qos{qos}".encode(), qos=qos)
    with connected(target.ep, "offline-sub", clean_session=False) as subscriber:
        wait_for(lambda: {b"qos1", b"qos2"} <= {payload for _, payload in subscriber.received()}, what="queued")


def test_a_qos1_publish_right_after_a_persistent_subscribers_disconnect_is_queued(target: Target) -> None:
    """The subscriber's DISCONNECT and the publish meet in the broker: the message must wait for the
    session, not go to the closing connection. amqtt lost about half of them; ten rounds."""
    rounds = 10
    sock, _ = raw_session(target, "racing-sub", clean=False)
    sock.sendall(raw.subscribe(f"{FEED}/race", qos_byte=1))
    assert raw.read_packet(sock)[0] == 0x90
    assert target.ep.username is not None and target.ep.password is not None
    with raw.open_socket(target.host, target.port) as publisher:
        publisher.sendall(raw.connect(target.ep.username, target.ep.password, client_id="racing-pub"))
        assert raw.read_packet(publisher)[0] == 0x20
        for n in range(rounds):
            sock.sendall(b"\xe0\x00")  # DISCONNECT, then at once the publish
            publisher.sendall(raw.publish(f"{FEED}/race", b"%d" % n, qos=1, packet_id=n + 1))
            assert raw.read_packet(publisher)[0] == 0x40
            sock.close()
            sock, present = raw_session(target, "racing-sub", clean=False)
            assert present == 1
            first, body = raw.read_packet(sock)
            topic, payload, qos, _, packet_id = raw.publish_fields(first, body)
            assert (topic, payload, qos) == (f"{FEED}/race", b"%d" % n, 1), f"round {n}"
            sock.sendall(b"\x40\x02" + (packet_id or 0).to_bytes(2, "big"))
    sock.close()


def test_redelivery_on_reconnect(target: Target) -> None:
    """A persistent subscriber that received QoS 1 and 2 messages without acknowledging them gets them
    again, DUP set, when it reconnects (MQTT 3.1.1 section 4.4). amqtt dropped them."""
    sock, _ = raw_session(target, "slow-sub", clean=False)
    sock.sendall(raw.subscribe(f"{FEED}/+", qos_byte=2))
    assert raw.read_packet(sock)[0] == 0x90
    with connected(target.ep) as publisher:
        publisher.publish(f"{FEED}/redeliver1", b"one", qos=1)
        publisher.publish(f"{FEED}/redeliver2", b"two", qos=2)
    first_time = sorted(raw.publish_fields(*raw.read_packet(sock))[:3] for _ in range(2))
    assert first_time == [(f"{FEED}/redeliver1", b"one", 1), (f"{FEED}/redeliver2", b"two", 2)]
    sock.close()  # no PUBACK, no PUBREC
    sock, present = raw_session(target, "slow-sub", clean=False)
    with sock:
        assert present == 1
        again = sorted(raw.publish_fields(*raw.read_packet(sock))[:4] for _ in range(2))
        assert again == [(f"{FEED}/redeliver1", b"one", 1, True), (f"{FEED}/redeliver2", b"two", 2, True)]


def test_zero_length_client_id(target: Target) -> None:
    """Accepted with a clean session (the broker assigns one), refused (CONNACK 2) with a persistent one."""
    assert target.ep.username is not None and target.ep.password is not None
    for clean, code in ((True, 0), (False, 2)):
        with raw.open_socket(target.host, target.port) as sock:
            sock.sendall(raw.connect(target.ep.username, target.ep.password, client_id="", clean=clean))
            first, body = raw.read_packet(sock)
            assert (first, body[1]) == (0x20, code), clean


def test_subscribe_failure(request: pytest.FixtureRequest, target: Target) -> None:
    """A filter the client may not read gets the failure code 0x80 in its SUBACK."""
    differs_on_mosquitto(request, target, "grants a SUBSCRIBE its ACL refuses (and then delivers nothing)")
    with connected(target.ep) as client:
        assert client.subscribe(f"{OTHERS}/+", qos=1) == 0x80


def test_a_refused_subscribe_costs_nothing_on_other_filters(target: Target) -> None:
    with connected(target.ep) as client:
        assert client.subscribe(f"{FEED}/+", qos=1) == 1
        client.subscribe(f"{OTHERS}/+", qos=1)
        client.publish(f"{FEED}/after-refusal", b"1")
        marker(client, client)
        assert (f"{FEED}/after-refusal", b"1") in client.received()


def test_dollar_topics(target: Target) -> None:
    """Filters starting with a wildcard never match topics starting with $ (section 4.7.2)."""
    with connected(target.service) as everything, connected(target.service) as publisher:
        assert everything.subscribe("#", qos=1) == 1
        assert everything.subscribe("+/manual_feed_a/+", qos=1) == 1
        publisher.client.publish(f"${FEED}/dollar", b"$", qos=1)
        marker(publisher, everything)
        assert all(not topic.startswith("$") for topic, _ in everything.received())


def test_unsubscribe(target: Target) -> None:
    with connected(target.ep) as client:
        for name in ("u1", "u2", "u3"):
            assert client.subscribe(f"{FEED}/{name}", qos=1) == 1
        unsubscribed: list[int] = []
        client.client.on_unsubscribe = lambda c, u, m, codes, props: unsubscribed.append(m)
        _, mid = client.client.unsubscribe([f"{FEED}/u1", f"{FEED}/u2"])
        wait_for(lambda: mid in unsubscribed, what="UNSUBACK")
        assert client.subscribe(f"{FEED}/marker", qos=1) == 1
        for name in ("u1", "u2", "u3"):
            client.publish(f"{FEED}/{name}", name.encode())
        marker(client, client)
        assert sorted(client.received()) == [(f"{FEED}/marker", b"marker"), (f"{FEED}/u3", b"u3")]


def test_overlapping_subscriptions(request: pytest.FixtureRequest, target: Target) -> None:
    """Two matching filters, QoS 2 and 1: one message at QoS 2, or one per filter at QoS 2 and 1 (section 3.3.5)."""
    differs_on_mosquitto(request, target, "sends one copy, at the QoS of the last matching filter (1)")
    with connected(target.ep) as client:
        assert client.subscribe(f"{FEED}/+", qos=2) == 2
        assert client.subscribe(f"{FEED}/overlap", qos=1) == 1
        client.publish(f"{FEED}/overlap", b"o", qos=2)
        # Either outcome has a QoS 2 copy; paho hands one over only at the PUBREL, so wait for it.
        wait_for(lambda: 2 in qos_of(client, f"{FEED}/overlap"), what="a QoS 2 copy")
        marker(client, client)
        assert qos_of(client, f"{FEED}/overlap") in ([2], [1, 2])


def test_keepalive(target: Target) -> None:
    """A client silent for 1.5 x its keepalive is dropped and its will published."""
    with connected(target.ep) as watcher:
        assert watcher.subscribe(f"{FEED}/+", qos=1) == 1
        device = will_client(target.ep, f"{FEED}/keepalive", keepalive=2)
        try:
            assert device.connack is not None and not device.connack.is_failure
            device.client.loop_stop()  # silent from now on, the socket left open
            watcher.wait_message(f"{FEED}/keepalive", b"will")
        finally:
            sock = device.client.socket()
            if sock is not None:
                sock.close()


def test_will_message(target: Target) -> None:
    with connected(target.ep) as watcher:
        assert watcher.subscribe(f"{FEED}/+", qos=1) == 1
        device = will_client(target.ep, f"{FEED}/will")
        assert device.connack is not None and not device.connack.is_failure
        drop(device)
        watcher.wait_message(f"{FEED}/will", b"will")


def test_mosquitto_clients_clear_a_retained_message(target: Target) -> None:
    """`mosquitto_pub -r -n`, the standard way to clear a retained message."""
    require(subprocess.run(["which", "mosquitto_pub"], capture_output=True).returncode == 0, "no mosquitto_pub")
    assert target.ep.username is not None and target.ep.password is not None
    login = ["-h", target.host, "-p", str(target.port), "-u", target.ep.username, "-P", target.ep.password]
    topic = f"{FEED}/cleared"
    for extra in (["-m", "1"], ["-n"]):
        subprocess.run(["mosquitto_pub", *login, "-q", "1", "-r", "-t", topic, *extra], check=True, timeout=30)
    with connected(target.ep) as later, connected(target.ep) as publisher:
        later.subscribe(f"{FEED}/+", qos=1)
        marker(publisher, later)
        assert later.received() == [(f"{FEED}/marker", b"marker")]


def test_open_client_is_refused_without_credentials(target: Target) -> None:
    refused = open_client(Endpoint(target.host, target.port))
    close(refused)
    assert refused.connack is None or refused.connack.is_failure
