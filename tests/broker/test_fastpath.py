"""The fast path (broker.fastpath): an ordinary PUBLISH skips amqtt's per-message path, and nothing a
client can see changes: order, a SUBSCRIBE sent just before, offline sessions' queues."""

from __future__ import annotations

import socket

from tests.broker import raw
from tests.broker.conftest import PASSWORD
from tests.support.embedded import EmbeddedBrokerHandle
from tests.support.env import wait_for

ACCEPTED = b"\x20\x02\x00\x00"
USER = "ep@nothing.com"
TOPIC = "feeds/manual_feed_a/a"


def _client(embedded: EmbeddedBrokerHandle, client_id: str, *, clean: bool = True) -> socket.socket:
    sock = raw.open_socket(embedded.host, embedded.port)
    sock.sendall(raw.connect(USER, PASSWORD, client_id=client_id, clean=clean))
    connack = raw.read_exactly(sock, 4)
    assert connack[:2] == ACCEPTED[:2] and connack[3] == 0  # accepted (byte 2: session present or not)
    return sock


def _expect(sock: socket.socket, first: int) -> bytes:
    kind, body = raw.read_packet(sock)
    assert kind == first, f"expected {first:#x}, got {kind:#x} {body!r}"
    return body


def test_a_subscribe_takes_effect_before_a_publish_sent_right_after_it(embedded: EmbeddedBrokerHandle) -> None:
    """Every decision cached, the PUBLISH could go the fast way at once; the SUBSCRIBE before it in the same
    write is still in the session loop, so it must wait for it and then be delivered."""
    with _client(embedded, "sub-then-pub") as sock:
        sock.sendall(raw.publish(TOPIC, b"1", qos=1, packet_id=1))  # caches the write decision
        _expect(sock, 0x40)
        sock.sendall(raw.subscribe(TOPIC, packet_id=2))  # caches the read decision
        _expect(sock, 0x90)
        sock.sendall(raw.packet(0xA2, b"\x00\x03" + raw.field(TOPIC)))  # UNSUBSCRIBE
        _expect(sock, 0xB0)
        sock.sendall(raw.subscribe("feeds/manual_feed_a/+", qos_byte=0, packet_id=4)
                     + raw.publish(TOPIC, b"2", qos=1, packet_id=5))
        kinds: dict[int, bytes] = {}
        while len(kinds) < 3:
            kind, body = raw.read_packet(sock)
            kinds[kind & 0xF0] = body
        assert set(kinds) == {0x90, 0x40, 0x30}
        assert raw.publish_fields(0x30, kinds[0x30])[:2] == (TOPIC, b"2")


def test_messages_keep_their_order_across_both_paths(embedded: EmbeddedBrokerHandle) -> None:
    """The first message of a fresh client goes amqtt's way (its write decision is not cached yet), those
    right behind it too while it is in the session loop, the rest the fast way: a subscriber gets them all,
    in the order sent, and the publisher its PUBACKs in order."""
    count = 300
    with _client(embedded, "order-sub") as sub, _client(embedded, "order-pub") as pub:
        sub.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=0))
        _expect(sub, 0x90)
        pub.sendall(b"".join(raw.publish(TOPIC, str(i).encode(), qos=1, packet_id=i + 1) for i in range(count)))
        acked = [int.from_bytes(_expect(pub, 0x40), "big") for _ in range(count)]
        assert acked == list(range(1, count + 1))
        received = []
        while len(received) < count:
            first, body = raw.read_packet(sub)
            received.append(int(raw.publish_fields(first, body)[1]))
        assert received == list(range(count))
    broker = embedded.broker._broker
    assert broker is not None and broker.fast.taken > 0  # the fast path did take part


def test_offline_sessions_share_one_copy_of_a_message(embedded: EmbeddedBrokerHandle) -> None:
    """2,000 offline sessions and a flood made millions of message objects: now one per message (and
    QoS), queued by reference, and each session still gets it when it comes back."""
    for name in ("sleeper-1", "sleeper-2"):
        with _client(embedded, name, clean=False) as sock:
            sock.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=1))
            _expect(sock, 0x90)
            sock.sendall(b"\xe0\x00")
    broker = embedded.broker._broker
    assert broker is not None

    def offline() -> list[object]:
        return [s for s, _ in broker._sessions.values() if s.client_id and "sleeper" in s.client_id
                and s.transitions.state != "connected"]

    wait_for(lambda: len(offline()) == 2, what="both sessions offline")
    with _client(embedded, "sharer") as pub:
        for packet_id in (1, 2):  # the second at least goes the fast way (decisions cached by the first)
            pub.sendall(raw.publish(TOPIC, b"7", qos=1, packet_id=packet_id))
            _expect(pub, 0x40)
    first, second = (list(s.retained_messages._queue) for s in offline())  # type: ignore[attr-defined]
    assert len(first) == len(second) == 2
    assert first[-1] is second[-1]
    with _client(embedded, "sleeper-1", clean=False) as sock:
        first_byte, body = raw.read_packet(sock)
        assert raw.publish_fields(first_byte, body)[:2] == (TOPIC, b"7")


def test_another_clients_queued_broadcast_does_not_hold_a_publish_back(embedded: EmbeddedBrokerHandle) -> None:
    """A broadcast on amqtt's queue (a flood fanned out to offline sessions, a decision being read) keeps
    its own publisher's later messages off the fast path (order), not everybody's; a notice's keeps all."""
    broker = embedded.broker._broker
    assert broker is not None
    with _client(embedded, "bystander") as pub:
        pub.sendall(raw.publish(TOPIC, b"1", qos=1, packet_id=1))  # caches the decisions
        _expect(pub, 0x40)
        own = next(c for c in broker._sessions if c.endswith("/bystander"))  # client ids are kept per user
        for publisher, packet_id, fast in (("u1/someone-else", 2, True), (None, 3, False), (own, 4, False)):
            broker._queued_from[publisher] += 1  # as `_broadcast_message` counts one it queued
            try:
                taken = broker.fast.taken
                pub.sendall(raw.publish(TOPIC, b"2", qos=1, packet_id=packet_id))
                assert int.from_bytes(_expect(pub, 0x40), "big") == packet_id
                assert (broker.fast.taken > taken) is fast, (publisher, fast)
            finally:
                broker._queued_from[publisher] -= 1
