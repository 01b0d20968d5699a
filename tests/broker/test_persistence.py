"""broker.persistence with the embedded broker in this process: a restored session's principal is read
again before it is used, so a token revoked while the broker was down gets nothing queued."""

from __future__ import annotations

import peewee as pw

from rtdp.accounts import ServiceAccount
from rtdp.models import BrokerQueued, BrokerSession, Token
from rtdp.settings import Settings
from tests.broker.clients import connected, login_result
from tests.broker.conftest import PASSWORD, World, token_for
from tests.support.embedded import running_embedded_broker
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
        wait_for(lambda: BrokerQueued.select().count() == 1, what="the copy for the session still allowed")
        assert embedded.broker.access.revoked == 1
        with connected(embedded.endpoint("device", kept), "kept", clean_session=False) as device:
            assert device.session_present
            device.wait_message(TOPIC, b"1")
        refused = login_result(embedded.endpoint("device", revoked), "revoked")
        assert refused is not None and refused.is_failure


def test_a_publish_queued_for_an_offline_session_is_acknowledged_once_its_row_is_committed(
    world: World, settings: Settings, service: ServiceAccount, sqlite_db: pw.Database
) -> None:
    """The fast path (broker.fastpath) hands a publish that would be queued for an offline persistent
    session to amqtt's way, whose PUBACK waits for the saved row; the others stay on the fast path."""
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
                assert BrokerQueued.select().count() == value + 1, "acknowledged before its row was committed"
            assert fast.taken == taken
