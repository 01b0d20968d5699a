"""What the embedded broker does with feeds: wills and retained messages go where points and feeds do."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from rtdp.accounts import ServiceAccount
from rtdp.models import User
from rtdp.settings import Settings
from rtdp.store import create_feed
from tests.broker.clients import TestClient, connected, drop, will_client
from tests.broker.conftest import PASSWORD, World
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for


class Sink:
    """Stands for `rtdp serve`'s intake (broker.intake.Sink): records what the broker hands over, on the
    broker's thread, and settles each message at once (as if stored)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()

    async def put(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        arrived: float,
        creator: int | None,
        settled: asyncio.Future[None] | None,
    ) -> None:
        with self._lock:
            self.messages.append((topic, payload, retain))
        if settled is not None and not settled.done():
            settled.set_result(None)

    def received(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def with_intake(
    world: World, settings: Settings, service: ServiceAccount, sink: Sink
) -> Iterator[EmbeddedBrokerHandle]:
    with running_embedded_broker(settings, service, intake=sink) as handle:
        yield handle


def _marker(publisher: TestClient, topic: str = "feeds/manual_feed_a/marker") -> None:
    publisher.publish(topic, b"marker")


def _settled(client: TestClient, topic: str) -> None:
    """Once the client's own marker comes back, the broker has finished with what it published before
    (one session's messages are handled one after the other), retaining included."""
    assert client.subscribe(topic) == 1
    _marker(client, topic)
    client.wait_message(topic, b"marker")


def test_a_will_on_a_feed_is_handed_to_the_intake(with_intake: EmbeddedBrokerHandle, sink: Sink) -> None:
    """amqtt sent wills without the event the intake listens to: delivered to subscribers, never stored."""
    device = will_client(with_intake.endpoint("ep@nothing.com", PASSWORD), "feeds/manual_feed_a/status")
    assert device.connack is not None and not device.connack.is_failure
    drop(device)
    wait_for(lambda: ("feeds/manual_feed_a/status", b"will", False) in sink.received(), what="the will at the intake")


def test_an_empty_retained_publish_clears_and_is_no_point(with_intake: EmbeddedBrokerHandle, sink: Sink) -> None:
    """`mosquitto_pub -r -n` clears a retained message; the intake got it as a point and reported
    "empty payload" on rtdp/errors."""
    with connected(with_intake.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/state", b"1", retain=True)
        ep.publish("feeds/manual_feed_a/state", b"", retain=True)
        _marker(ep)
    wait_for(lambda: ("feeds/manual_feed_a/marker", b"marker", False) in sink.received(), what="the marker")
    assert [m for m in sink.received() if m[0] == "feeds/manual_feed_a/state"] == [
        ("feeds/manual_feed_a/state", b"1", True)
    ]


def _retained_reaching(embedded: EmbeddedBrokerHandle, feed: str) -> list[tuple[str, bytes]]:
    """What ap gets on subscribing to `feed`, up to a marker the service sends after the SUBACK."""
    ap_endpoint = embedded.endpoint("ap@nothing.com", PASSWORD)
    with connected(ap_endpoint) as ap, connected(embedded.service_endpoint()) as service:
        assert ap.subscribe(f"feeds/{feed}/+") == 1
        _marker(service, f"feeds/{feed}/marker")
        ap.wait_message(f"feeds/{feed}/marker", b"marker")
        return [message for message in ap.received() if message[0] != f"feeds/{feed}/marker"]


def test_no_retained_message_on_a_feed_that_does_not_exist(embedded: EmbeddedBrokerHandle, world: World) -> None:
    """Retained copies on feeds never created stayed in memory, and reached whoever created the feed."""
    with connected(embedded.service_endpoint()) as service:
        service.publish("feeds/ghost/a", b"planted", retain=True)
        _settled(service, "feeds/ghost/marker")
    create_feed("ghost", world.ap)
    assert _retained_reaching(embedded, "ghost") == []


def test_a_deleted_feeds_retained_message_does_not_reach_the_next_owner(
    embedded: EmbeddedBrokerHandle, world: World
) -> None:
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/a", b"ep-private", retain=True)
        _settled(ep, "feeds/manual_feed_a/marker")
    world.ep_feed.delete_instance(recursive=True)
    create_feed("manual_feed_a", User.get_by_id(world.ap.id))
    assert _retained_reaching(embedded, "manual_feed_a") == []


def test_a_retained_message_on_an_existing_feed_is_kept(embedded: EmbeddedBrokerHandle, world: World) -> None:
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        ap.publish("feeds/manual_feed_aj/a", b"kept", retain=True)
        _settled(ap, "feeds/manual_feed_aj/marker")
    assert _retained_reaching(embedded, "manual_feed_aj") == [("feeds/manual_feed_aj/a", b"kept")]


def test_a_refused_subscribe_before_a_feed_exists_hides_nothing_later(
    embedded: EmbeddedBrokerHandle, world: World
) -> None:
    """The refusal of `rtdp/stored/NEW` was cached for 5 s, so the same client's `feeds/+/x` missed
    NEW's first messages once the feed was created."""
    ep_endpoint = embedded.endpoint("ep@nothing.com", PASSWORD)
    with connected(ep_endpoint) as ep, connected(embedded.service_endpoint()) as service:
        assert ep.subscribe("rtdp/stored/newfeed") == 0x80
        assert ep.subscribe("feeds/+/x") == 1
        create_feed("newfeed", world.ep)
        service.publish("feeds/newfeed/x", b"first")
        service.publish("feeds/manual_feed_a/x", b"marker")
        ep.wait_message("feeds/manual_feed_a/x", b"marker")
        assert ("feeds/newfeed/x", b"first") in ep.received()
