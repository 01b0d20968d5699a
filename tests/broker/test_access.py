"""Authentication and topic ACL of the embedded broker, through real sockets and paho clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import peewee as pw
import pytest
from prometheus_client import CollectorRegistry

from broker.access import feed_wildcard
from broker.metrics import BrokerCollector
from rtdp.accounts import ServiceAccount, create_user
from rtdp.models import Feed, Group, Membership, Share, Token, User
from rtdp.permissions import Access
from rtdp.settings import Settings
from rtdp.store import create_feed
from tests.broker.clients import TestClient, close, connected, login_result, open_client
from tests.broker.conftest import PASSWORD, World, make_world, token_for
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker
from tests.support.env import wait_for

REFUSED = 0x80
NOT_AUTHORIZED = 0x87  # paho maps MQTT 3.1.1 CONNACK 5 onto the MQTT 5 code


@pytest.fixture
def service_sub(embedded: EmbeddedBrokerHandle) -> Iterator[TestClient]:
    """The service account watching every feed, as the bridge does."""
    with connected(embedded.service_endpoint(), embedded.service.client_id("bridge")) as client:
        assert client.subscribe("feeds/#") == 1
        yield client


def delivered_before_marker(
    publisher: TestClient, watcher: TestClient, topic: str, marker_topic: str, marker: bytes = b"marker"
) -> bool:
    """Publish to `topic`, then a permitted marker from the same client; once the marker arrived,
    amqtt (one publisher's messages in order) has decided about the first message."""
    payload = f"probe-{topic}".encode()
    publisher.publish(topic, payload)
    publisher.publish(marker_topic, marker)
    watcher.wait_message(marker_topic, marker)
    return (topic, payload) in watcher.received()


# -- authentication ---------------------------------------------------------------------------------


def test_login_with_email_and_password(embedded: EmbeddedBrokerHandle) -> None:
    reason = login_result(embedded.endpoint("ep@nothing.com", PASSWORD))
    assert reason is not None and not reason.is_failure


def test_login_with_token_and_any_username(embedded: EmbeddedBrokerHandle, world: World) -> None:
    token = token_for(world.ep)
    reason = login_result(embedded.endpoint("my-device", token))
    assert reason is not None and not reason.is_failure
    # The Account page shows where the token was last used from.
    assert Token.get(Token.user == world.ep.id).last_address == "127.0.0.1"


def test_login_with_service_account(embedded: EmbeddedBrokerHandle) -> None:
    reason = login_result(embedded.service_endpoint())
    assert reason is not None and not reason.is_failure


def _disable_ep() -> None:
    User.update(is_active=False).where(User.email == "ep@nothing.com").execute()


@pytest.mark.parametrize(
    ("username", "password", "prepare"),
    [
        ("ep@nothing.com", "wrong", None),
        ("nobody@nothing.com", PASSWORD, None),
        ("ep@nothing.com", PASSWORD, _disable_ep),
        (None, None, None),
        ("ep@nothing.com", None, None),
    ],
    ids=["wrong-password", "unknown-user", "disabled-user", "anonymous", "no-password"],
)
def test_bad_credentials_are_refused(
    embedded: EmbeddedBrokerHandle,
    username: str | None,
    password: str | None,
    prepare: Callable[[], None] | None,
) -> None:
    if prepare:
        prepare()
    failures = embedded.broker.access.auth_failures
    reason = login_result(embedded.endpoint(username, password))
    assert reason is not None and reason.value == NOT_AUTHORIZED
    assert embedded.broker.access.auth_failures == failures + 1


def test_revoked_token_is_refused(embedded: EmbeddedBrokerHandle, world: World) -> None:
    from rtdp.models import Token

    token = token_for(world.ep)
    Token.update(revoked=True).execute()
    reason = login_result(embedded.endpoint("device", token))
    assert reason is not None and reason.value == NOT_AUTHORIZED


# -- publishing --------------------------------------------------------------------------------------


def test_user_publishes_to_own_feed(
    embedded: EmbeddedBrokerHandle, service_sub: TestClient
) -> None:
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/axis_a00", b"7")
        service_sub.wait_message("feeds/manual_feed_a/axis_a00", b"7")
    assert embedded.broker.access.refused_publishes == 0


def test_publish_to_another_users_feed_is_dropped_and_counted(
    embedded: EmbeddedBrokerHandle, service_sub: TestClient
) -> None:
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert not delivered_before_marker(ap, service_sub, "feeds/manual_feed_a/axis_a00", "feeds/manual_feed_aj/x")
    assert embedded.broker.access.refused_publishes == 1


def test_token_limited_to_another_feed_is_refused(
    embedded: EmbeddedBrokerHandle, world: World, service_sub: TestClient
) -> None:
    token = token_for(world.ep, feed=world.ep_feed)
    create_feed("ep_other", world.ep)
    with connected(embedded.endpoint("device", token)) as device:
        assert not delivered_before_marker(device, service_sub, "feeds/ep_other/a", "feeds/manual_feed_a/a")
        assert device.subscribe("feeds/ep_other/#") == REFUSED
        assert device.subscribe("feeds/manual_feed_a/#") == 1


def test_read_only_token_cannot_publish(
    embedded: EmbeddedBrokerHandle, world: World, service_sub: TestClient
) -> None:
    token = token_for(world.ep, access=Access.READ)
    access = embedded.broker.access
    with connected(embedded.endpoint("viewer", token)) as reader:
        assert reader.subscribe("feeds/manual_feed_a/#") == 1
        assert reader.subscribe("rtdp/stored/manual_feed_a") == 1
        reader.publish("feeds/manual_feed_a/a", b"1")
        wait_for(lambda: access.refused_publishes == 1, what="the publish to be refused")
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
            ep.publish("feeds/manual_feed_a/a", b"2")
            service_sub.wait_message("feeds/manual_feed_a/a", b"2")
            reader.wait_message("feeds/manual_feed_a/a", b"2")
    assert ("feeds/manual_feed_a/a", b"1") not in service_sub.received()


def test_users_cannot_use_internal_or_other_topics(
    embedded: EmbeddedBrokerHandle, service_sub: TestClient
) -> None:
    with connected(embedded.service_endpoint(), embedded.service.client_id("viewer")) as watcher:
        assert watcher.subscribe("rtdp/#") == 1
        with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
            for topic in ("rtdp/stored/manual_feed_a", "rtdp/errors/manual_feed_a/a", "other/topic"):
                ep.publish(topic, b"forged")
            for topic in ("feeds/manual_feed_a", "feeds/manual_feed_a/a/extra", "feeds/bad name/a"):
                ep.publish(topic, b"forged")
            ep.publish("feeds/manual_feed_a/a", b"marker")
            service_sub.wait_message("feeds/manual_feed_a/a", b"marker")
            for topic_filter in ("rtdp/#", "rtdp/+/manual_feed_a", "#", "other/topic", "$SYS/#"):
                assert ep.subscribe(topic_filter) == REFUSED, topic_filter
        assert watcher.received() == []
    assert [payload for _, payload in service_sub.received()] == [b"marker"]
    assert embedded.broker.access.refused_publishes == 6


def test_a_dollar_topic_publish_is_refused_and_the_session_keeps_working(
    embedded: EmbeddedBrokerHandle, service_sub: TestClient
) -> None:
    # amqtt stops a session's message loop at a publish to a $-topic but leaves the connection open:
    # every later publish was acknowledged and silently dropped.
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        assert not delivered_before_marker(ep, service_sub, "$SYS/broker/forged", "feeds/manual_feed_a/a")
        assert not delivered_before_marker(ep, service_sub, "$x", "feeds/manual_feed_a/a", b"second")
        assert not ep.disconnected.is_set()
    assert embedded.broker.access.refused_publishes == 2


# -- subscribing and receiving ---------------------------------------------------------------------


def test_subscribe_to_another_users_feed_is_refused(embedded: EmbeddedBrokerHandle) -> None:
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert ap.subscribe("feeds/manual_feed_a/#") == REFUSED
        assert ap.subscribe("feeds/manual_feed_a/axis_a00") == REFUSED
        assert ap.subscribe("rtdp/stored/manual_feed_a") == REFUSED
        assert ap.subscribe("rtdp/errors/manual_feed_a/#") == REFUSED
        assert ap.subscribe("rtdp/alerts/manual_feed_a") == REFUSED
        assert ap.subscribe("feeds/manual_feed_aj/#") == 1
        assert ap.subscribe("rtdp/stored/manual_feed_aj") == 1
        assert ap.subscribe("rtdp/errors/manual_feed_aj/+") == 1
        assert ap.subscribe("rtdp/alerts/manual_feed_aj") == 1
    assert embedded.broker.access.refused_subscribes == 5


def test_wildcard_subscriber_receives_only_permitted_feeds(embedded: EmbeddedBrokerHandle) -> None:
    with (
        connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap,
        connected(embedded.service_endpoint(), embedded.service.client_id("bridge")) as bridge,
    ):
        for topic_filter in ("feeds/#", "feeds/+/axis_a00", "rtdp/stored/+", "rtdp/errors/#", "rtdp/alerts/+"):
            assert ap.subscribe(topic_filter) == 1
        for feed in ("manual_feed_a", "manual_feed_aj"):
            bridge.publish(f"feeds/{feed}/axis_a00", feed.encode())
            bridge.publish(f"rtdp/alerts/{feed}", feed.encode())
            bridge.publish(f"rtdp/stored/{feed}", feed.encode())
            bridge.publish(f"rtdp/errors/{feed}/axis_a00", feed.encode())
        bridge.publish("rtdp/stored/manual_feed_aj", b"marker")
        ap.wait_message("rtdp/stored/manual_feed_aj", b"marker")
    received = ap.received()
    assert ("feeds/manual_feed_aj/axis_a00", b"manual_feed_aj") in received
    assert ("rtdp/stored/manual_feed_aj", b"manual_feed_aj") in received
    assert ("rtdp/errors/manual_feed_aj/axis_a00", b"manual_feed_aj") in received
    assert ("rtdp/alerts/manual_feed_aj", b"manual_feed_aj") in received
    assert not [message for message in received if b"manual_feed_a" == message[1]]


def test_public_feed_is_readable_not_writable(
    embedded: EmbeddedBrokerHandle, world: World, service_sub: TestClient
) -> None:
    Feed.update(public=True).where(Feed.id == world.ep_feed.id).execute()
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert ap.subscribe("feeds/manual_feed_a/#") == 1
        assert ap.subscribe("rtdp/stored/manual_feed_a") == 1
        assert not delivered_before_marker(ap, service_sub, "feeds/manual_feed_a/a", "feeds/manual_feed_aj/a")


@pytest.mark.parametrize("via", ["user", "group"])
def test_shares(embedded: EmbeddedBrokerHandle, world: World, service_sub: TestClient, via: str) -> None:
    read_feed = create_feed("ep_read_shared", world.ep)
    write_feed = create_feed("ep_write_shared", world.ep)
    if via == "user":
        Share.create(feed=read_feed, user=world.ap, access="read")
        Share.create(feed=write_feed, user=world.ap, access="write")
    else:
        team = Group.create(name="team")
        Membership.create(user=world.ap, group=team)
        Share.create(feed=read_feed, group=team, access="read")
        Share.create(feed=write_feed, group=team, access="write")
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert ap.subscribe("feeds/ep_read_shared/#") == 1
        assert ap.subscribe("feeds/ep_write_shared/#") == 1  # write implies read
        assert ap.subscribe("feeds/manual_feed_a/#") == REFUSED
        assert not delivered_before_marker(ap, service_sub, "feeds/ep_read_shared/a", "feeds/ep_write_shared/a")
        ap.wait_message("feeds/ep_write_shared/a", b"marker")  # and it hears its own publish back


def test_without_an_intake_unknown_feeds_are_refused(
    embedded: EmbeddedBrokerHandle, world: World, service_sub: TestClient
) -> None:
    """`rtdp broker` alone: a subscribing bridge cannot learn who published, so it could not create the
    feed for them (bridge.routes); the ACL refuses such publishes rather than pass them on."""
    assert embedded.broker.access.auto_create is False
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        assert not delivered_before_marker(ap, service_sub, "feeds/ap_new_feed/t", "feeds/manual_feed_aj/a")
    assert embedded.broker.access.refused_publishes == 1
    assert Feed.get_or_none(Feed.name == "ap_new_feed") is None


def test_auto_create_off_refuses_unknown_feed(
    world: World, settings: Settings, service: ServiceAccount
) -> None:
    with running_embedded_broker(settings.replace(auto_create=False), service) as handle:
        with (
            connected(handle.service_endpoint()) as watcher,
            connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap,
        ):
            assert watcher.subscribe("feeds/#") == 1
            assert not delivered_before_marker(ap, watcher, "feeds/unknown_feed/a", "feeds/manual_feed_aj/a")
        assert handle.broker.access.refused_publishes == 1
    assert Feed.get_or_none(Feed.name == "unknown_feed") is None


def test_retained_messages_follow_the_acl(embedded: EmbeddedBrokerHandle) -> None:
    """amqtt sends retained messages on subscribe without its RECEIVE check; ours filters them."""
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        ep.publish("feeds/manual_feed_a/a", b"kept", retain=True)
    with connected(embedded.endpoint("ap@nothing.com", PASSWORD)) as ap:
        ap.publish("feeds/manual_feed_aj/a", b"ap-kept", retain=True)
        assert ap.subscribe("feeds/#") == 1
        ap.wait_message("feeds/manual_feed_aj/a", b"ap-kept")
        assert ("feeds/manual_feed_a/a", b"kept") not in ap.received()
    with connected(embedded.endpoint("ep@nothing.com", PASSWORD)) as ep:
        assert ep.subscribe("feeds/manual_feed_a/#") == 1
        ep.wait_message("feeds/manual_feed_a/a", b"kept")


@pytest.mark.postgres
def test_acl_on_postgres(pg_db: pw.Database, settings: Settings, service: ServiceAccount) -> None:
    world = make_world()
    Share.create(feed=world.ep_feed, user=world.ap, access="read")
    with (
        running_embedded_broker(settings, service) as handle,
        connected(handle.service_endpoint()) as watcher,
        connected(handle.endpoint("ap@nothing.com", PASSWORD)) as ap,
    ):
        assert watcher.subscribe("feeds/#") == 1
        assert ap.subscribe("feeds/manual_feed_a/#") == 1
        assert not delivered_before_marker(ap, watcher, "feeds/manual_feed_a/a", "feeds/manual_feed_aj/a")


def test_feed_wildcard() -> None:
    for spanning in ("feeds/#", "feeds/+", "feeds/+/x", "feeds/+/+", "rtdp/stored/+", "rtdp/stored/#",
                     "rtdp/errors/#", "rtdp/errors/+/a", "rtdp/alerts/+", "rtdp/alerts/#"):
        assert feed_wildcard(spanning), spanning
    for other in ("#", "+", "+/+/+", "rtdp/#", "rtdp/+/x", "feeds/f/#", "rtdp/stored/f", "other/+", "rtdp/+",
                  "rtdp/alerts/f"):
        assert not feed_wildcard(other), other


def test_user_created_while_running_can_log_in(embedded: EmbeddedBrokerHandle) -> None:
    create_user("late@nothing.com", "pw-late")
    reason = login_result(embedded.endpoint("late@nothing.com", "pw-late"))
    assert reason is not None and not reason.is_failure


# -- revocation reaches open connections -----------------------------------------------------------


@pytest.fixture
def rechecking(world: World, settings: Settings, service: ServiceAccount) -> Iterator[EmbeddedBrokerHandle]:
    """Credentials read again before every decision (a lifetime of 0), so a test needs no waiting."""
    with running_embedded_broker(settings.replace(credential_ttl=0), service) as handle:
        yield handle


def test_a_revoked_token_loses_its_open_connection(rechecking: EmbeddedBrokerHandle, world: World) -> None:
    from rtdp.models import Token

    handle = rechecking
    token = token_for(world.ep)
    with (
        connected(handle.service_endpoint(), handle.service.client_id("bridge")) as watcher,
        connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep,
    ):
        assert watcher.subscribe("feeds/#") == 1
        device = open_client(handle.endpoint("device", token))
        try:
            assert device.subscribe("feeds/manual_feed_a/#") == 1
            device.publish("feeds/manual_feed_a/a", b"before")
            device.wait_message("feeds/manual_feed_a/a", b"before")
            Token.update(revoked=True).where(Token.user == world.ep.id).execute()
            # Its next delivery finds the token revoked: not delivered, and the connection is closed.
            ep.publish("feeds/manual_feed_a/a", b"after")
            watcher.wait_message("feeds/manual_feed_a/a", b"after")
            wait_for(device.disconnected.is_set, what="the revoked client to be disconnected")
            assert ("feeds/manual_feed_a/a", b"after") not in device.received()
        finally:
            close(device)
        assert handle.broker.access.revoked == 1
        # Nor does it get back in: the login cached with the token was dropped with it.
        reason = login_result(handle.endpoint("device", token))
        assert reason is not None and reason.value == NOT_AUTHORIZED


def test_a_revoked_publisher_is_refused_and_disconnected(rechecking: EmbeddedBrokerHandle, world: World) -> None:
    handle = rechecking
    with connected(handle.service_endpoint(), handle.service.client_id("bridge")) as watcher:
        assert watcher.subscribe("feeds/#") == 1
        ap = open_client(handle.endpoint("ap@nothing.com", PASSWORD))
        try:
            ap.publish("feeds/manual_feed_aj/a", b"before")
            watcher.wait_message("feeds/manual_feed_aj/a", b"before")
            User.update(is_active=False).where(User.id == world.ap.id).execute()
            ap.publish("feeds/manual_feed_aj/a", b"after")  # PUBACKed by amqtt, then refused
            wait_for(ap.disconnected.is_set, what="the disabled user to be disconnected")
        finally:
            close(ap)
        with connected(handle.endpoint("ep@nothing.com", PASSWORD)) as ep:
            ep.publish("feeds/manual_feed_a/a", b"marker")
            watcher.wait_message("feeds/manual_feed_a/a", b"marker")
    assert ("feeds/manual_feed_aj/a", b"after") not in watcher.received()
    assert handle.broker.access.refused_publishes == 1


def test_a_password_change_ends_open_password_logins(rechecking: EmbeddedBrokerHandle, world: World) -> None:
    """As it ends the user's web sessions: an MQTT connection that logged in with the old password
    loses its rights (token logins are not affected)."""
    handle = rechecking
    token = token_for(world.ap)
    with connected(handle.service_endpoint(), handle.service.client_id("bridge")) as watcher:
        assert watcher.subscribe("feeds/#") == 1
        ap = open_client(handle.endpoint("ap@nothing.com", PASSWORD))
        device = open_client(handle.endpoint("device", token))
        try:
            ap.publish("feeds/manual_feed_aj/a", b"before")
            watcher.wait_message("feeds/manual_feed_aj/a", b"before")
            # What the account page does on a password change.
            User.update(session_version=User.session_version + 1).where(User.id == world.ap.id).execute()
            ap.publish("feeds/manual_feed_aj/a", b"after")  # PUBACKed by amqtt, then refused
            wait_for(ap.disconnected.is_set, what="the old password's login to be disconnected")
            device.publish("feeds/manual_feed_aj/a", b"token")
            watcher.wait_message("feeds/manual_feed_aj/a", b"token")
        finally:
            close(ap)
            close(device)
    assert ("feeds/manual_feed_aj/a", b"after") not in watcher.received()
    registry = CollectorRegistry()
    registry.register(BrokerCollector(handle.broker))
    assert registry.get_sample_value("rtdp_broker_revoked_total") == handle.broker.access.revoked == 1


def test_a_disabled_users_persistent_session_queues_nothing(rechecking: EmbeddedBrokerHandle, world: World) -> None:
    handle = rechecking
    with connected(handle.endpoint("ap@nothing.com", PASSWORD), "ap-session", clean_session=False) as ap:
        assert ap.subscribe("feeds/manual_feed_aj/#") == 1
    User.update(is_active=False).where(User.id == world.ap.id).execute()
    with connected(handle.service_endpoint(), handle.service.client_id("viewer")) as service:
        service.publish("feeds/manual_feed_aj/a", b"while-disabled")
        wait_for(lambda: handle.broker.access.revoked == 1, what="the offline session's rights to be dropped")
    User.update(is_active=True).where(User.id == world.ap.id).execute()
    with connected(handle.endpoint("ap@nothing.com", PASSWORD), "ap-session", clean_session=False) as ap:
        with connected(handle.service_endpoint(), handle.service.client_id("viewer")) as service:
            service.publish("feeds/manual_feed_aj/a", b"marker")
        ap.wait_message("feeds/manual_feed_aj/a", b"marker")
        assert ("feeds/manual_feed_aj/a", b"while-disabled") not in ap.received()
