"""Starting and stopping the embedded broker: bound port, port in use, client-id hijack, `run`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.errors import PortInUse
from broker.metrics import session_counts
from broker.server import EmbeddedBroker
from rtdp.accounts import ServiceAccount
from rtdp.models import Share, Token
from rtdp.mqtt import Endpoint
from rtdp.permissions import Access
from rtdp.settings import HostPort, Settings
from tests.broker.clients import close, connected, drop, login_result, open_client, publish_lines, will_client
from tests.broker.conftest import PASSWORD, World, token_for
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import free_port, port_open, wait_for, wait_port

NOT_AUTHORIZED = 0x87


def test_port_zero_reports_the_bound_port(embedded: EmbeddedBrokerHandle) -> None:
    assert embedded.port != 0
    assert port_open(embedded.host, embedded.port)


def test_port_in_use_is_a_one_line_error_naming_the_option(
    world: World, settings: Settings, service: ServiceAccount
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as caught, running_embedded_broker(settings, service, port=port):
            pass
    message = str(caught.value)
    assert "--mqtt" in message and f"127.0.0.1:{port}" in message and "\n" not in message


def test_stop_releases_the_port(world: World, settings: Settings, service: ServiceAccount) -> None:
    async def start_stop() -> int:
        broker = EmbeddedBroker(settings, service, listen=HostPort("127.0.0.1", 0))
        async with broker:
            port = broker.address.port
            assert port_open("127.0.0.1", port)
        return port

    port = asyncio.run(start_stop())
    assert not port_open("127.0.0.1", port)


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
def test_wrong_password_with_the_service_client_id_does_not_break_it(
    embedded: EmbeddedBrokerHandle, clean_session: bool
) -> None:
    """amqtt handles a CONNECT's client id before the password; an attacker knowing the bridge's
    client id must not be able to knock its subscription over."""
    client_id = embedded.service.client_id("bridge")
    with connected(embedded.service_endpoint(), client_id, clean_session=clean_session) as bridge:
        assert bridge.subscribe("feeds/#") == 1
        attacker = login_result(embedded.endpoint(embedded.service.username, "wrong"), client_id)
        assert attacker is not None and attacker.value == NOT_AUTHORIZED
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
            ep.publish("feeds/manual_feed_a/a", b"after-attack")
            bridge.wait_message("feeds/manual_feed_a/a", b"after-attack")
        assert not bridge.disconnected.is_set()


def test_run_prints_the_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = (
        "import sys; from pathlib import Path; from broker.server import run; from rtdp.settings import Settings\n"
        f"run(Settings.build(env={{}}, data_dir=Path(sys.argv[1]), mqtt='127.0.0.1:{port}'))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        wait_port("127.0.0.1", port, timeout=30)
        service = ServiceAccount.load_or_create(tmp_path / "data")
        reason = login_result(Endpoint("127.0.0.1", port, service.username, service.password))
        assert reason is not None and not reason.is_failure
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"mqtt://127.0.0.1:{port}" in out
    assert "Traceback" not in err
    wait_for(lambda: not port_open("127.0.0.1", port), what="the port to be released")


def test_persistent_session_gets_messages_queued_while_offline(embedded: EmbeddedBrokerHandle) -> None:
    """The bridge's session is persistent: its principal must outlive the connection, since amqtt
    asks the RECEIVE check while queueing for an offline session."""
    client_id = embedded.service.client_id("bridge")
    with connected(embedded.service_endpoint(), client_id, clean_session=False) as bridge:
        assert bridge.subscribe("feeds/#") == 1
    # The broker must have seen the disconnect, or the message takes the live path, not the queue.
    wait_for(lambda: session_counts(embedded.broker).offline == 1, what="the session to be offline")
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/a", b"while-offline")
    wait_for(lambda: session_counts(embedded.broker).queued_offline == 1, what="the message to be queued")
    with connected(embedded.service_endpoint(), client_id, clean_session=False) as bridge:
        bridge.wait_message("feeds/manual_feed_a/a", b"while-offline")
        # Queued, not retained: amqtt set retain=1 here, and the bridge refuses retained points without x.
        assert bridge.messages == [("feeds/manual_feed_a/a", b"while-offline", False)]


def _queue_for_offline_session(embedded: EmbeddedBrokerHandle, endpoint: Endpoint, message: bytes) -> None:
    """A persistent session `ep-device` subscribed to manual_feed_a, offline, with `message` queued."""
    offline, queued = session_counts(embedded.broker).offline, session_counts(embedded.broker).queued_offline
    with connected(endpoint, "ep-device", clean_session=False) as device:
        assert device.subscribe("feeds/manual_feed_a/#") == 1
    wait_for(lambda: session_counts(embedded.broker).offline == offline + 1, what="the session to be offline")
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as publisher:
        publisher.publish("feeds/manual_feed_a/a", message)
    wait_for(lambda: session_counts(embedded.broker).queued_offline == queued + 1, what="the message to be queued")


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
def test_another_user_with_the_same_client_id_gets_a_session_of_its_own(
    embedded: EmbeddedBrokerHandle, clean_session: bool
) -> None:
    """amqtt kept sessions by client id alone: ap, connecting with the id of ep's offline persistent
    session, was handed what was queued for ep (ep's private points); a clean CONNECT wiped it. Refusing
    such a CONNECT instead locked owners out of their own ids (a squatter, or their own other token)."""
    ep = embedded.endpoint("ep@nothing.com", PASSWORD)
    _queue_for_offline_session(embedded, ep, b"private")
    ap = open_client(embedded.endpoint("ap@nothing.com", PASSWORD), "ep-device", clean_session=clean_session)
    close(ap)
    assert ap.connack is not None and not ap.connack.is_failure
    # Queued messages go out once: ep still gets it, so ap did not.
    with connected(ep, "ep-device", clean_session=False) as device:
        device.wait_message("feeds/manual_feed_a/a", b"private")
    assert ap.received() == []


def test_nobody_is_locked_out_of_a_client_id(embedded: EmbeddedBrokerHandle, world: World) -> None:
    """ap squatting ep's device id, and ep coming back with another token scope or a password."""
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD), "ep-device", clean_session=False):
        pass
    wait_for(lambda: session_counts(embedded.broker).offline == 1, what="ap's session to be offline")
    device_token = token_for(world.ep, world.ep_feed, Access.WRITE)
    _queue_for_offline_session(embedded, embedded.endpoint("device", device_token), b"mine")
    with connected(embedded.endpoint("device", device_token), "ep-device", clean_session=False) as device:
        device.wait_message("feeds/manual_feed_a/a", b"mine")
    Token.update(revoked=True).execute()
    for endpoint in (
        embedded.endpoint("device", token_for(world.ep, world.ep_feed)),  # re-issued, read and write
        embedded.endpoint("ep@nothing.com", PASSWORD),
    ):
        again = open_client(endpoint, "ep-device", clean_session=True)
        close(again)
        assert again.connack is not None and not again.connack.is_failure, again.connack


def test_a_revoked_devices_session_is_not_resumed_by_another_user(
    world: World, settings: Settings, service: ServiceAccount
) -> None:
    """Once the holder's token was revoked its principal was gone, and ap could resume the session."""
    with running_embedded_broker(settings.replace(credential_ttl=0), service) as embedded:
        _queue_for_offline_session(embedded, embedded.endpoint("device", token_for(world.ep)), b"private")
        Token.update(revoked=True).execute()
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as publisher:

            def revoked() -> bool:  # the next message for the session re-checks its credentials
                publisher.publish("feeds/manual_feed_a/a", b"trigger")
                return embedded.broker.access.revoked >= 1

            wait_for(revoked, interval=0.2, what="the device's rights to be revoked")
        ap = open_client(embedded.endpoint("ap@nothing.com", PASSWORD), "ep-device", clean_session=False)
        close(ap)
        assert ap.connack is not None and not ap.connack.is_failure
        with connected(embedded.endpoint("device", token_for(world.ep)), "ep-device", clean_session=False) as device:
            device.wait_message("feeds/manual_feed_a/a", b"private")
        assert ("feeds/manual_feed_a/a", b"private") not in ap.received()


def test_take_over_keeps_the_new_connections_rights(embedded: EmbeddedBrokerHandle) -> None:
    """A second CONNECT with the same client id replaces the session (amqtt leaves the old
    connection open); when the old one disconnects, the broker must not forget who the new one is."""
    endpoint = embedded.endpoint("ep@nothing.com", PASSWORD)
    first = open_client(endpoint, "ep-device")
    try:
        with connected(endpoint, "ep-device") as second:
            close(first)
            wait_for(first.disconnected.is_set, what="the old connection to close")
            assert second.subscribe("feeds/manual_feed_a/#") == 1
            second.publish("feeds/manual_feed_a/a", b"after-take-over")
            second.wait_message("feeds/manual_feed_a/a", b"after-take-over")
    finally:
        close(first)


def test_a_publisher_that_disconnects_at_once_loses_nothing(embedded: EmbeddedBrokerHandle) -> None:
    """amqtt PUBACKs a QoS 1 publish when it queues it for its session loop; that loop used to stop at
    the DISCONNECT and drop what it had not broadcast yet (about half of a fast burst)."""
    count = 2000
    with connected(embedded.service_endpoint()) as subscriber:
        assert subscriber.subscribe("feeds/manual_feed_a/#") == 1
        lines = [str(i) for i in range(count)]
        publish_lines(embedded.endpoint("ep@nothing.com", PASSWORD), "feeds/manual_feed_a/burst", lines)
        wait_for(lambda: len(subscriber.received()) >= count, timeout=30, what=f"{count} messages")
        assert sorted(int(payload) for _, payload in subscriber.received()) == list(range(count))


def test_a_will_needs_the_right_to_publish_on_its_topic(embedded: EmbeddedBrokerHandle) -> None:
    """amqtt broadcast wills unchecked: ap could forge points on ep's stored notices or feed."""
    ap = embedded.endpoint("ap@nothing.com", PASSWORD)
    for topic in ("rtdp/stored/manual_feed_a", "feeds/manual_feed_a/a", "rtdp/errors/manual_feed_aj/a"):
        refused = will_client(ap, topic)
        close(refused)
        assert refused.connack is not None and refused.connack.value == NOT_AUTHORIZED, topic
    with connected(ap) as watcher:
        assert watcher.subscribe("feeds/manual_feed_aj/#") == 1
        device = will_client(ap, "feeds/manual_feed_aj/status")
        assert device.connack is not None and not device.connack.is_failure
        drop(device)
        watcher.wait_message("feeds/manual_feed_aj/status", b"will")


def test_a_silent_client_is_dropped_after_one_and_a_half_keepalives(embedded: EmbeddedBrokerHandle) -> None:
    """A device that lost power keeps its TCP connection open on the broker's side; amqtt never
    dropped it, so its will (the way others learn it is gone) never fired."""
    ep = embedded.endpoint("ep@nothing.com", PASSWORD)
    with connected(ep) as watcher:
        assert watcher.subscribe("feeds/manual_feed_a/#") == 1
        device = will_client(ep, "feeds/manual_feed_a/status", keepalive=1)
        assert device.connack is not None and not device.connack.is_failure
        before = session_counts(embedded.broker).connected
        device.client.loop_stop()  # silent from now on: no PINGREQ, and the socket stays open
        watcher.wait_message("feeds/manual_feed_a/status", b"will")
        assert session_counts(embedded.broker).connected < before
        sock = device.client.socket()
        assert sock is not None
        sock.settimeout(5)
        while sock.recv(64):  # a PINGRESP may still be unread; then the broker's close (a timeout fails)
            pass
        sock.close()


def test_a_will_is_checked_again_when_it_fires(
    world: World, tmp_path: Path, service: ServiceAccount
) -> None:
    """Write access removed while the device was connected: its will is not sent."""
    settings = Settings.build(env={}, data_dir=tmp_path / "data", decision_ttl=0)
    share = Share.create(feed=world.ep_feed, user=world.ap, access="write")
    with running_embedded_broker(settings, service) as embedded:
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as watcher:
            assert watcher.subscribe("feeds/manual_feed_a/#") == 1
            device = will_client(embedded.endpoint("ap@nothing.com", PASSWORD), "feeds/manual_feed_a/status")
            assert device.connack is not None and not device.connack.is_failure
            share.delete_instance()
            before = session_counts(embedded.broker).connected
            drop(device)
            wait_for(lambda: session_counts(embedded.broker).connected < before, what="the drop handled")
            # The broadcast queue is in order: a will sent at the drop would arrive before this.
            watcher.publish("feeds/manual_feed_a/status", b"marker")
            watcher.wait_message("feeds/manual_feed_a/status", b"marker")
            assert ("feeds/manual_feed_a/status", b"will") not in watcher.received()


def test_packets_written_in_one_iteration_leave_together_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coalescing writer under amqtt: one send() per loop iteration, nothing reordered, nothing
    left behind at close (a real socket pair). A send goes straight to the socket (os.write, GIL released)
    while the transport holds nothing, else through the transport."""
    import broker.server as server
    from broker.server import _CoalescingWriter

    async def scenario() -> bytes:
        left, right = socket.socketpair()
        _, raw_writer = await asyncio.open_connection(sock=left)
        reader, _ = await asyncio.open_connection(sock=right)
        writer = _CoalescingWriter(raw_writer)
        sent: list[bytes] = []
        original, write_fd = raw_writer.write, os.write
        raw_writer.write = lambda data: (sent.append(data), original(data))[1]  # type: ignore[method-assign]

        def to_fd(fd: int, data: bytes) -> int:
            if fd == left.fileno():
                sent.append(bytes(data))
            return write_fd(fd, data)

        monkeypatch.setattr(server.os, "write", to_fd)
        for i in range(5):
            writer.write(b"%d," % i)
            await writer.drain()  # amqtt drains after every packet: that must not split them
        await asyncio.sleep(0)
        assert sent == [b"0,1,2,3,4,"]
        writer.write(b"last")
        await writer.close()  # before the next iteration: held data goes first
        return await reader.read()

    assert asyncio.run(scenario()) == b"0,1,2,3,4,last"


def test_what_the_socket_does_not_take_follows_through_the_transport_in_order() -> None:
    """More than the socket's buffers hold, in several writes: the first goes partly to the socket and the
    rest through the transport, later ones behind it; the reader gets every byte in order."""
    from broker.server import _CoalescingWriter

    chunks = [bytes([i]) * 300_000 for i in range(8)]

    async def scenario() -> bytes:
        left, right = socket.socketpair()
        _, raw_writer = await asyncio.open_connection(sock=left)
        reader, _ = await asyncio.open_connection(sock=right)
        writer = _CoalescingWriter(raw_writer)
        for chunk in chunks:
            writer.write(chunk)
            await asyncio.sleep(0)  # one send per iteration
        assert raw_writer.transport.get_write_buffer_size() > 0  # the socket did not take it all
        reading = asyncio.ensure_future(reader.read())  # closing waits until the peer took it
        await writer.close()
        return await reading

    assert asyncio.run(scenario()) == b"".join(chunks)
