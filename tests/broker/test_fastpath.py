"""The fast path (broker.fastpath): an ordinary PUBLISH skips amqtt's per-message path, and nothing a
client can see changes: order, a SUBSCRIBE sent just before, offline sessions' queues."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from rtdp.accounts import ServiceAccount
from rtdp.models import Share
from rtdp.settings import Settings
from tests.broker import raw
from tests.broker.conftest import PASSWORD, World
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
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


def test_a_subscriber_added_to_a_known_filter_gets_the_next_message(embedded: EmbeddedBrokerHandle) -> None:
    """A topic's subscribers are worked out once and kept (a flood to 100 offline sessions checked 100
    decisions per message): a session joining or leaving a filter that already had subscribers changes amqtt's
    list in place, and the next message must see it."""
    with _client(embedded, "first") as first, _client(embedded, "second") as second, \
            _client(embedded, "kept-pub") as pub:
        first.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=0))
        _expect(first, 0x90)
        for packet_id in (1, 2):  # the second goes the fast way, with the topic's subscribers kept
            pub.sendall(raw.publish(TOPIC, str(packet_id).encode(), qos=1, packet_id=packet_id))
            _expect(pub, 0x40)
            assert raw.publish_fields(*raw.read_packet(first))[1] == str(packet_id).encode()
        second.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=0, packet_id=7))  # the same filter
        _expect(second, 0x90)
        pub.sendall(raw.publish(TOPIC, b"3", qos=1, packet_id=3))
        _expect(pub, 0x40)
        assert raw.publish_fields(*raw.read_packet(first))[1] == b"3"
        assert raw.publish_fields(*raw.read_packet(second))[1] == b"3"
        second.sendall(raw.packet(0xA2, b"\x00\x08" + raw.field("feeds/manual_feed_a/#")))  # UNSUBSCRIBE
        _expect(second, 0xB0)
        pub.sendall(raw.publish(TOPIC, b"4", qos=1, packet_id=4))
        _expect(pub, 0x40)
        assert raw.publish_fields(*raw.read_packet(first))[1] == b"4"
        second.sendall(b"\xc0\x00")  # PINGREQ: its answer comes first, nothing was sent to it before
        _expect(second, 0xD0)


def test_a_topics_kept_subscribers_follow_a_change_of_rights(
    embedded: EmbeddedBrokerHandle, world: World
) -> None:
    """Rights changed (a share removed, as any process records it in the rights revision): the decisions
    are dropped, and with them the subscribers kept for a topic."""
    share = Share.create(feed=world.ep_feed, user=world.ap, access="read")
    with raw.open_socket(embedded.host, embedded.port) as reader, _client(embedded, "rights-pub") as pub:
        reader.sendall(raw.connect("ap@nothing.com", PASSWORD, client_id="reader"))
        assert raw.read_exactly(reader, 4) == ACCEPTED
        reader.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=0))
        _expect(reader, 0x90)
        for packet_id in (1, 2):
            pub.sendall(raw.publish(TOPIC, str(packet_id).encode(), qos=1, packet_id=packet_id))
            _expect(pub, 0x40)
            assert raw.publish_fields(*raw.read_packet(reader))[1] == str(packet_id).encode()
        share.delete_instance()

        async def changed() -> None:
            embedded.broker.access.rights_changed()

        embedded.call(changed())
        pub.sendall(raw.publish(TOPIC, b"3", qos=1, packet_id=3))
        _expect(pub, 0x40)
        reader.sendall(b"\xc0\x00")  # PINGREQ
        _expect(reader, 0xD0)


def test_a_topics_kept_subscribers_expire_with_the_decisions_they_came_from(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    """With nothing recorded in the rights revision (a share removed by hand in the database), a cached
    decision still stops counting after decision_ttl; the subscribers kept for a topic go with it."""
    settings = Settings.build(env={}, data_dir=tmp_path / "data", decision_ttl=1.0)
    share = Share.create(feed=world.ep_feed, user=world.ap, access="read")
    with running_embedded_broker(settings, service) as embedded, \
            raw.open_socket(embedded.host, embedded.port) as reader, \
            raw.open_socket(embedded.host, embedded.port) as pub:
        reader.sendall(raw.connect("ap@nothing.com", PASSWORD, client_id="reader"))
        assert raw.read_exactly(reader, 4) == ACCEPTED
        # The service account publishes: its rights never expire, so only the reader's decision can.
        pub.sendall(raw.connect(service.username, service.password, client_id="ttl-pub"))
        assert raw.read_exactly(pub, 4) == ACCEPTED
        reader.sendall(raw.subscribe("feeds/manual_feed_a/#", qos_byte=0))
        _expect(reader, 0x90)
        packet_id = 0
        while True:  # until a message goes the fast way, with the topic's subscribers kept
            packet_id += 1
            taken = embedded.broker._broker.fast.taken  # type: ignore[union-attr]
            pub.sendall(raw.publish(TOPIC, b"%d" % packet_id, qos=1, packet_id=packet_id))
            _expect(pub, 0x40)
            assert raw.publish_fields(*raw.read_packet(reader))[1] == b"%d" % packet_id
            if embedded.broker._broker.fast.taken > taken:  # type: ignore[union-attr]
                break
        share.delete_instance()  # no revision: only the decision's lifetime can tell
        time.sleep(1.2)  # past decision_ttl: what this test is about
        pub.sendall(raw.publish(TOPIC, b"after", qos=1, packet_id=99))
        _expect(pub, 0x40)
        reader.sendall(b"\xc0\x00")  # PINGREQ: its answer comes first, nothing was sent to it before
        _expect(reader, 0xD0)
