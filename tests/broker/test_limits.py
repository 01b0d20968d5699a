"""The embedded broker's bounds against hostile clients (issue 11 #2, #3, #7, #8 on the MQTT side):
connection caps, the CONNECT timeout, no CLOSE-WAIT, a client that never reads, the password throttle,
and credentials revoked on the web closing MQTT connections at once."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import peewee as pw
import psutil
import pytest

from broker import access as access_module
from broker.acks import AckAfterSettleHandler
from broker.limits import CopyBudget
from broker.server import quiet_amqtt_logging
from rtdp import revision
from rtdp.accounts import ServiceAccount
from rtdp.models import Token, User
from rtdp.permissions import Principal
from rtdp.settings import Settings
from tests.broker import raw
from tests.broker.clients import connected, login_result, open_client
from tests.broker.conftest import PASSWORD, World, token_for
from tests.broker.raw import connect, publish
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for

ACCEPTED = b"\x20\x02\x00\x00"  # CONNACK, return code 0


def _raw(handle: EmbeddedBrokerHandle, source: str = "127.0.0.1", receive_buffer: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect: the window
    sock.settimeout(30)  # a broker that neither answers nor closes fails the test instead of hanging it
    sock.bind((source, 0))
    sock.connect((handle.host, handle.port))
    return sock


def _closed_by_broker(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@contextmanager
def _broker(tmp_path: Path, service: ServiceAccount, **overrides: object) -> Iterator[EmbeddedBrokerHandle]:
    settings = Settings.build(env={}, data_dir=tmp_path / "data", **overrides)
    with running_embedded_broker(settings, service) as handle:
        yield handle


def test_a_connection_without_connect_is_closed_after_the_timeout(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service, mqtt_connect_timeout=0.5) as handle, _raw(handle) as sock:
        assert _closed_by_broker(sock)  # without the timeout the recv waits 30 s and raises
        wait_for(lambda: handle.broker.limits.open == 0, what="the connection released")


def test_connections_over_the_per_address_cap_are_closed_at_once(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service, mqtt_connections_per_ip=3, mqtt_max_connections=10) as handle:
        idle = [_raw(handle) for _ in range(3)]
        try:
            wait_for(lambda: handle.broker.limits.open == 3, what="three idle connections counted")
            with _raw(handle) as refused:
                assert _closed_by_broker(refused)
            assert handle.broker.limits.refused == 1
            # Another address still gets in, and a freed slot is usable again.
            with _raw(handle, source="127.0.0.2") as other:
                other.sendall(connect("ep@nothing.com", PASSWORD))
                assert other.recv(4) == ACCEPTED
            idle.pop().close()
            wait_for(lambda: handle.broker.limits.open == 2, what="a closed connection released")
            with connected(handle.endpoint("ep@nothing.com", PASSWORD)):
                pass
        finally:
            for sock in idle:
                sock.close()


def test_connections_over_the_total_cap_are_closed_at_once(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service, mqtt_connections_per_ip=2, mqtt_max_connections=3) as handle:
        idle = [_raw(handle), _raw(handle), _raw(handle, source="127.0.0.2")]
        try:
            wait_for(lambda: handle.broker.limits.open == 3, what="three idle connections counted")
            with _raw(handle, source="127.0.0.3") as refused:
                assert _closed_by_broker(refused)
        finally:
            for sock in idle:
                sock.close()


def test_a_socket_closed_before_connect_leaves_no_close_wait(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service) as handle:
        for _ in range(20):
            _raw(handle).close()
        wait_for(lambda: handle.broker.limits.open == 0, what="the connections released")

        def close_wait() -> list[object]:
            return [
                c for c in psutil.Process().net_connections("tcp")
                if c.status == psutil.CONN_CLOSE_WAIT and c.laddr and c.laddr[1] == handle.port
            ]

        wait_for(lambda: not close_wait(), what="no socket of the broker in CLOSE-WAIT")


def _handler(handle: EmbeddedBrokerHandle) -> AckAfterSettleHandler | None:
    broker = handle.broker._broker
    assert broker is not None
    for _, handler in list(broker._sessions.values()):
        if isinstance(handler, AckAfterSettleHandler):
            return handler
    return None


def test_a_client_that_never_reads_its_pubacks_is_no_longer_read_from(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service) as handle, _raw(handle, receive_buffer=4096) as sock:
        sock.sendall(connect("ep@nothing.com", PASSWORD))
        assert sock.recv(4) == ACCEPTED
        handler = wait_for(lambda: _handler(handle), what="the session")
        writer = handler.writer
        assert writer is not None
        transport = writer._writer.transport
        # Small kernel buffers on both sides, so that the PUBACKs reach the broker's own buffer soon.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        per_chunk = 1000
        chunk = b"".join(
            publish("feeds/manual_feed_a/x", b"1", qos=1, packet_id=i + 1) for i in range(per_chunk)
        )
        sent = 0
        sock.settimeout(2)
        while sent < 200 * per_chunk:  # bounded: about 6 MB, 200,000 PUBLISH packets
            try:
                sock.sendall(chunk)
            except TimeoutError:
                break  # the broker stopped reading (or is slow: the wait below tells)
            sent += per_chunk
        # Either the broker stopped reading because its PUBACKs wait, or (without the bound) it read all.
        wait_for(
            lambda: getattr(handler._reader_gate, "draining", False) or handle.broker.access.messages_in >= sent,
            timeout=60,
            what="the broker to stop reading or to have read everything",
        )
        # 4 bytes per PUBACK: everything read would have left hundreds of KB waiting here.
        assert transport.get_write_buffer_size() < 256 * 1024
        assert handle.broker.access.messages_in < sent


def test_password_guesses_over_mqtt_are_throttled(world: World, tmp_path: Path, service: ServiceAccount) -> None:
    with _broker(tmp_path, service, login_attempts=3, login_window=3600) as handle:
        for _ in range(3):
            code = login_result(handle.endpoint("ep@nothing.com", "wrong"))
            assert code is not None and code.value == 0x87  # paho's MQTT 5 name for CONNACK 5
        assert handle.broker.access.throttled == 0
        # The right password is refused too while the account is throttled: guessing gains nothing.
        code = login_result(handle.endpoint("ep@nothing.com", PASSWORD))
        assert code is not None and code.value == 0x87
        assert handle.broker.access.throttled == 1
        # Tokens are not guesses: not throttled.
        token = token_for(world.ep)
        assert login_result(handle.endpoint("any", token)) == 0


def test_password_checks_run_in_the_hashing_pool(
    world: World, settings: Settings, service: ServiceAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in the pool of topic decisions: a CONNECT flood queues there and never delays a delivery. The
    # real check runs; only the thread it ran on is noted.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-hash")
    checked: list[str] = []
    original = access_module.check_password

    def noting(email: str, password: str) -> Principal:
        checked.append(threading.current_thread().name)
        return original(email, password)

    monkeypatch.setattr(access_module, "check_password", noting)
    try:
        with running_embedded_broker(settings, service, hash_pool=hashing) as handle:
            with connected(handle.endpoint("ep@nothing.com", PASSWORD)):
                pass
    finally:
        hashing.shutdown()
    assert checked and all(name.startswith("test-hash") for name in checked), checked


@pytest.mark.parametrize("change", ["token revoked", "password changed", "user disabled"])
def test_credentials_changed_close_idle_mqtt_connections_at_once(
    world: World, tmp_path: Path, service: ServiceAccount, sqlite_db: pw.Database, change: str
) -> None:
    # A credential lifetime of an hour, and clients that do nothing: only the rights revision can close them.
    with _broker(tmp_path, service, credential_ttl=3600) as handle:
        token = token_for(world.ep)
        client = open_client(handle.endpoint("device" if change == "token revoked" else "ep@nothing.com",
                                             token if change == "token revoked" else PASSWORD))
        with connected(handle.endpoint("ap@nothing.com", PASSWORD)) as bystander:
            try:
                assert client.connack is not None and not client.connack.is_failure
                with sqlite_db.atomic():  # as the pages, the API and the CLI do it
                    if change == "token revoked":
                        Token.update(revoked=True).where(Token.user == world.ep.id).execute()
                    elif change == "password changed":
                        User.update(session_version=User.session_version + 1).where(User.id == world.ep.id).execute()
                    else:
                        User.update(is_active=False).where(User.id == world.ep.id).execute()
                    revision.bump()
                assert client.disconnected.wait(10)
                assert not bystander.disconnected.is_set()
            finally:
                client.client.loop_stop()


def test_an_offline_session_queue_keeps_the_newest_messages(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    with _broker(tmp_path, service, session_queue=5) as handle:
        device = handle.endpoint("ep@nothing.com", PASSWORD)
        with connected(device, "sleeper", clean_session=False) as sleeper:
            assert sleeper.subscribe("feeds/manual_feed_a/x", qos=1) == 1
        with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as publisher:
            for i in range(8):
                publisher.publish("feeds/manual_feed_a/x", str(i))
        wait_for(lambda: handle.broker._broker.dropped_queued == 3, what="three oldest dropped")
        with connected(device, "sleeper", clean_session=False) as sleeper:
            wait_for(lambda: len(sleeper.received()) == 5, what="the five newest")
            assert [payload for _, payload in sleeper.received()] == [str(i).encode() for i in range(3, 8)]


def test_an_unused_persistent_session_expires(world: World, tmp_path: Path, service: ServiceAccount) -> None:
    with _broker(tmp_path, service, session_expiry=60) as handle:
        device = handle.endpoint("ep@nothing.com", PASSWORD)
        with connected(device, "gone", clean_session=False) as gone:
            assert gone.subscribe("feeds/manual_feed_a/x", qos=1) == 1
        broker = handle.broker._broker
        assert broker is not None
        key = f"u{world.ep.id}/gone"
        session = wait_for(lambda: broker._sessions.get(key, (None,))[0], what="the offline session")
        wait_for(lambda: session.last_disconnect_time is not None, what="the disconnect")
        session.last_disconnect_time -= 120  # as if it had been away two minutes: past the expiry
        wait_for(lambda: key not in broker._sessions, what="the session removed")
        assert handle.broker.access.principal(key) is None
        with connected(device, "gone", clean_session=False):
            assert broker._sessions[key][0] is not session  # a new session: the old one is gone


def test_failed_connections_are_logged_as_a_summary(
    world: World, tmp_path: Path, service: ServiceAccount, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_amqtt_logging()
    with caplog.at_level(logging.WARNING, logger="amqtt.broker"), _broker(tmp_path, service) as handle:
        for _ in range(20):
            _raw(handle).close()
        wait_for(lambda: handle.broker.limits.open == 0, what="the connections released")
    failures = [r for r in caplog.records if r.getMessage().startswith("Failed to initialize client session")]
    assert len(failures) == 1, [r.getMessage() for r in failures]


def test_one_users_persistent_sessions_are_capped(world: World, tmp_path: Path, service: ServiceAccount) -> None:
    """Issue 11 #3: each persistent session queues (and saves) a copy of every publish it subscribed to, so
    one user may keep `sessions_per_user` of them; one more is refused with CONNACK 3, with a token too."""

    def connack(user: str, secret: str, client_id: str, *, clean: bool = False) -> bytes:
        with _raw(handle) as sock:
            sock.sendall(connect(user, secret, client_id=client_id, clean=clean))
            answer = raw.read_exactly(sock, 4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return answer

    with _broker(tmp_path, service, sessions_per_user=3) as handle:
        for index in range(3):
            assert connack("ep@nothing.com", PASSWORD, f"keep-{index}") == ACCEPTED
        broker = handle.broker._broker
        assert broker is not None
        wait_for(lambda: len(broker._sessions) == 3, what="three persistent sessions")
        assert connack("ep@nothing.com", PASSWORD, "one-more") == b"\x20\x02\x00\x03"  # server unavailable
        assert connack("device", token_for(world.ep), "one-more") == b"\x20\x02\x00\x03"  # the same user
        assert f"u{world.ep.id}/one-more" not in broker._sessions
        assert connack("ep@nothing.com", PASSWORD, "keep-1") == b"\x20\x02\x01\x00"  # its own, present
        assert connack("ep@nothing.com", PASSWORD, "passing", clean=True) == ACCEPTED
        assert connack("ap@nothing.com", PASSWORD, "one-more") == ACCEPTED  # another user's own count


def test_the_copy_budget_is_per_user_and_refills() -> None:
    budget = CopyBudget(100)
    assert budget.charge("ep", 100, now=0.0) == 0.0  # a second's worth at once
    assert budget.charge("ep", 50, now=0.0) == pytest.approx(0.5)  # 50 over: half a second at 100/s
    assert budget.charge("ap", 100, now=0.0) == 0.0  # another user's own budget
    assert budget.charge("ep", 50, now=1.0) == 0.0  # -50, refilled by 100 a second
    assert budget.charge("ep", 10, now=100.0) == 0.0  # never above 100: 90 left ...
    assert budget.charge("ep", 91, now=100.0) == pytest.approx(0.01)  # ... so 1 over
    assert budget.throttled == 2


def test_a_flood_queued_for_offline_sessions_is_slowed_down_and_nothing_is_lost(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    """Issue 11 #3: each publish to a feed that 100 offline sessions subscribe to cost 100 copies on the
    loop every client shares, and one user's flood of them held everybody's PUBACKs (p99 280 ms). Over
    `offline_copies` a second, the broker stops reading from the publisher for a while: its messages are
    all acknowledged and queued, only later."""
    sessions, messages, rate = 10, 41, 200  # 410 copies: 200 at once, then 200 a second
    with _broker(tmp_path, service, offline_copies=rate) as handle:
        device = handle.endpoint("ep@nothing.com", PASSWORD)
        for index in range(sessions):
            with connected(device, f"sleeper-{index}", clean_session=False) as sleeper:
                assert sleeper.subscribe("feeds/manual_feed_a/x", qos=1) == 1
        broker = handle.broker._broker
        assert broker is not None
        with _raw(handle) as pub:
            pub.sendall(connect("ep@nothing.com", PASSWORD, client_id="flooder"))
            assert raw.read_exactly(pub, 4) == ACCEPTED
            pub.sendall(publish("feeds/manual_feed_a/x", b"0", qos=1, packet_id=1))  # the decisions cached
            assert raw.read_exactly(pub, 4) == b"\x40\x02\x00\x01"
            began = time.monotonic()
            for first in range(1, messages, 10):  # as a flooder goes: a batch, then its PUBACKs
                pub.sendall(b"".join(publish("feeds/manual_feed_a/x", b"%d" % i, qos=1, packet_id=i + 1)
                                     for i in range(first, first + 10)))
                acked = [raw.read_exactly(pub, 4) for _ in range(10)]
                assert acked == [b"\x40\x02" + (i + 1).to_bytes(2, "big") for i in range(first, first + 10)]
            took = time.monotonic() - began
        # The last message is read only once the copies over the budget before it are paid for: about
        # (399 - 200) / 200 seconds.
        assert took >= 0.7, took
        assert broker.copies.throttled > 0
        assert broker.dropped_queued == 0
        with connected(device, "sleeper-3", clean_session=False) as sleeper:
            wait_for(lambda: len(sleeper.received()) == messages, what="every message queued")
            assert [payload for _, payload in sleeper.received()] == [b"%d" % i for i in range(messages)]
