"""broker.persistence with the embedded broker in this process: a restored session's principal is read
again before it is used, so a token revoked while the broker was down gets nothing queued; a message
queued for many sessions is saved once; QoS 2 flows open at a stop are completed after the start."""

from __future__ import annotations

import socket
import struct
from contextlib import closing

import peewee as pw

from rtdp.accounts import ServiceAccount
from rtdp.models import BrokerAudience, BrokerMessage, BrokerSession, Token
from rtdp.settings import Settings
from tests.broker import raw
from tests.broker.clients import connected, login_result
from tests.broker.conftest import PASSWORD, World, token_for
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for

TOPIC = "feeds/manual_feed_a/t"


def test_a_restored_session_keeps_its_rights_but_not_revoked_ones(
    world: World, settings: Settings, service: ServiceAccount, sqlite_db: pw.Database
) -> None:
    kept, revoked = token_for(world.ep), token_for(world.ep)
    with running_embedded_broker(settings, service) as embedded:
        for client_id, token in (("kept", kept), ("revoked", revoked)):
            with connected(embedded.endpoint("device", token), client_id, clean_session=False) as device:
                assert device.subscribe(TOPIC, 1) == 1
    Token.update(revoked=True).where(Token.id == Token.select(pw.fn.MAX(Token.id)).scalar()).execute()
    with running_embedded_broker(settings, service) as embedded:
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
            assert ep.subscribe(TOPIC, 1) == 1
            ep.publish(TOPIC, b"1")
            ep.wait_message(TOPIC, b"1")  # fanned out to every subscriber by now
        wait_for(lambda: BrokerMessage.select().count() == 1, what="the copy for the session still allowed")
        assert [a.members for a in BrokerAudience.select()] == [f"u{world.ep.id}/kept"]
        assert embedded.broker.access.revoked == 1
        with connected(embedded.endpoint("device", kept), "kept", clean_session=False) as device:
            assert device.session_present
            device.wait_message(TOPIC, b"1")
        refused = login_result(embedded.endpoint("device", revoked), "revoked")
        assert refused is not None and refused.is_failure


def test_a_publish_queued_for_an_offline_session_is_acknowledged_once_its_row_is_committed(
    world: World, settings: Settings, service: ServiceAccount, sqlite_db: pw.Database
) -> None:
    """The fast path (broker.fastpath) takes a publish that would be queued for an offline persistent
    session too (amqtt's way cost the whole server its latency under a flood), and its PUBACK waits for
    the saved row."""
    with running_embedded_broker(settings, service) as embedded:
        fast = embedded.broker._broker.fast
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
            for value in range(3):  # no persistent subscriber: the decisions get cached, then the fast path
                ep.publish(TOPIC, str(value).encode())
            taken = fast.taken
            assert taken > 0, "the common case takes the fast path"
            with connected(embedded.endpoint("ep@nothing.com", PASSWORD), "away", clean_session=False) as away:
                assert away.subscribe(TOPIC, 1) == 1
            offline = BrokerSession.select().where(BrokerSession.disconnected.is_null(False))
            wait_for(offline.exists, what="the session saved offline")
            for value in range(5):
                ep.publish(TOPIC, str(value).encode())  # returns once acknowledged
                assert BrokerMessage.select().count() == value + 1, "acknowledged before its row was committed"
            assert fast.taken == taken + 5, "queued for an offline session, and still the fast path"


PUBREC, PUBREL, PUBCOMP = 0x50, 0x62, 0x70


def _raw_session(embedded: EmbeddedBrokerHandle, client_id: str, *, present: bool) -> socket.socket:
    """A raw persistent session of ep's, connected; `present`: the CONNACK must say it was kept."""
    sock = raw.open_socket(embedded.host, embedded.port)
    sock.sendall(raw.connect("ep@nothing.com", PASSWORD, client_id=client_id, clean=False))
    assert raw.read_packet(sock) == (0x20, bytes((int(present), 0)))
    return sock


def _ack(kind: int, packet_id: int) -> bytes:
    return bytes((kind, 2)) + struct.pack("!H", packet_id)


def test_qos2_state_waiting_for_pubrel_and_pubcomp_survives_a_restart(
    world: World, settings: Settings, service: ServiceAccount, sqlite_db: pw.Database
) -> None:
    """Issue 10, QoS 2 state: a client's publish answered with PUBREC and waiting for its PUBREL is not
    delivered again when resent after the restart, and its PUBREL gets a PUBCOMP; a delivery whose PUBREC
    came is completed with PUBREL after the restart, not delivered a second time."""
    with running_embedded_broker(settings, service) as embedded:
        with closing(_raw_session(embedded, "q2sub", present=False)) as sub:
            sub.sendall(raw.subscribe(TOPIC, 2))
            assert raw.read_packet(sub) == (0x90, b"\x00\x01\x02")
            with closing(_raw_session(embedded, "q2pub", present=False)) as pub:
                pub.sendall(raw.publish(TOPIC, b"once", qos=2, packet_id=9))
                assert raw.read_packet(pub) == (PUBREC, b"\x00\x09")  # and no PUBREL: the broker stops
                first, body = raw.read_packet(sub)
                topic, payload, qos, dup, packet_id = raw.publish_fields(first, body)
                assert (topic, payload, qos, dup) == (TOPIC, b"once", 2, False) and packet_id is not None
                sub.sendall(_ack(PUBREC, packet_id))
                assert raw.read_packet(sub) == (PUBREL, struct.pack("!H", packet_id))  # and no PUBCOMP
                # Both flows are open when the broker stops (as at SIGTERM): saved as they are.
    with running_embedded_broker(settings, service) as embedded:
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as watcher:
            assert watcher.subscribe(TOPIC, 2) == 2
            with closing(_raw_session(embedded, "q2pub", present=True)) as pub:
                pub.sendall(raw.packet(0x3C, raw.field(TOPIC) + b"\x00\x09" + b"once"))  # the resend, DUP=1
                assert raw.read_packet(pub) == (PUBREC, b"\x00\x09")
                pub.sendall(_ack(PUBREL, 9))
                packets = [raw.read_packet(pub), raw.read_packet(pub)]  # one PUBREC may come again first
                assert (PUBCOMP, b"\x00\x09") in packets, packets
                pub.sendall(raw.publish(TOPIC, b"after", qos=1, packet_id=10))
            watcher.wait_message(TOPIC, b"after")
            assert [payload for _, payload in watcher.received()] == [b"after"], "delivered a second time"
            with closing(_raw_session(embedded, "q2sub", present=True)) as sub:
                assert raw.read_packet(sub) == (PUBREL, struct.pack("!H", packet_id)), "not the message again"
                sub.sendall(_ack(PUBCOMP, packet_id))
                sub.sendall(b"\xc0\x00")  # PINGREQ: what came before its answer
                payloads = []
                while (answer := raw.read_packet(sub))[0] != 0xD0:
                    payloads.append(raw.publish_fields(*answer)[1])
                assert payloads == [b"after"], "only what was queued while it was away"
