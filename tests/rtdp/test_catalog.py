"""rtdp.catalog: where a principal's points go, and what writing may create on the way (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import replace

import peewee as pw
import pytest

from rtdp import catalog
from rtdp.accounts import principal_for
from rtdp.casts import XCast, YCast
from rtdp.codec import Casts
from rtdp.errors import NotFound, PermissionDenied, QuotaExceeded, UnknownFeed
from rtdp.models import Axis, Feed, Share, User
from rtdp.permissions import Access, Principal
from rtdp.store import create_axis, create_feed

ON = catalog.Policy(auto_create=True, feed_quota=0)
OFF = catalog.Policy(auto_create=False, feed_quota=0)
SERVICE = Principal(user_id=0, email="rtdp-service", is_admin=True, service=True)


def user(email: str, admin: bool = False) -> User:
    # Not create_user: argon2 is slow by design and these tests never log in with a password.
    return User.create(email=email, password_hash="unused", is_admin=admin)


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return user("owner@example.com")


@pytest.fixture
def feed(owner: User) -> Feed:
    feed = create_feed("kitchen", owner, x_cast="int", y_cast="bool")
    create_axis(feed, "door")
    return feed


def names(model: type[Feed] | type[Axis]) -> list[str]:
    return sorted(row.name for row in model.select())


def test_an_existing_place_is_found_with_its_ids_and_casts(owner: User, feed: Feed) -> None:
    target = catalog.resolve(principal_for(owner), "kitchen", "door", ON, create=False)
    axis = Axis.get(Axis.name == "door")
    assert target == catalog.Target("kitchen", "door", Casts(XCast.INT, YCast.BOOL), feed.id, axis.id, owner.id)
    assert not target.pending and not target.created and target.y_cast is YCast.BOOL


def test_checking_creates_nothing_and_creating_makes_feed_and_axis_for_the_writer(owner: User) -> None:
    principal = principal_for(owner)
    pending = catalog.resolve(principal, "garden", "rain", ON, create=False)
    assert pending == catalog.Target("garden", "rain", Casts())  # the casts a new feed gets
    assert pending.pending and names(Feed) == [] and names(Axis) == []
    made = catalog.resolve(principal, "garden", "rain", ON, create=True)
    feed = Feed.get(Feed.name == "garden")
    assert (made.feed_id, made.owner_id, made.created, made.pending) == (feed.id, owner.id, True, False)
    assert made.axis_id == Axis.get(Axis.name == "rain").id
    assert catalog.resolve(principal, "garden", "rain", ON, create=True).created is False  # found this time


def test_a_missing_axis_is_pending_until_created(owner: User, feed: Feed) -> None:
    principal = principal_for(owner)
    pending = catalog.resolve(principal, "kitchen", "window", ON, create=False)
    assert pending.pending and pending.feed_id == feed.id and pending.casts == Casts(XCast.INT, YCast.BOOL)
    assert names(Axis) == ["door"]
    made = catalog.resolve(principal, "kitchen", "window", ON, create=True)
    assert made.created and not made.pending and names(Axis) == ["door", "window"]


def test_auto_create_off_refuses_missing_feeds_and_axes(owner: User, feed: Feed) -> None:
    principal = principal_for(owner)
    for create in (False, True):
        with pytest.raises(NotFound) as no_feed:
            catalog.resolve(principal, "garden", "rain", OFF, create=create)
        assert no_feed.value.as_dict() == {
            "error": "no feed named 'garden' (auto-create is off)", "code": "not_found", "feed": "garden"
        }
        with pytest.raises(NotFound) as no_axis:
            catalog.resolve_axes(principal, "kitchen", ["zz", "door", "aa"], OFF, create=create)
        assert no_axis.value.message == "feed 'kitchen' has no axis 'aa' (auto-create is off)"
        assert no_axis.value.detail == {"axis": "aa"}
    assert names(Feed) == ["kitchen"] and names(Axis) == ["door"]
    assert not catalog.resolve(principal, "kitchen", "door", OFF, create=True).pending


def test_who_may_create_feeds(owner: User) -> None:
    principal = principal_for(owner)
    limited = replace(principal, token_id=1, token_feed_id=99)
    reading = replace(principal, token_id=2, token_access=Access.READ)
    writing = replace(principal, token_id=3, token_access=Access.WRITE)
    assert [catalog.may_create(p, ON) for p in (principal, writing, limited, reading, SERVICE)] == [
        True, True, False, False, False
    ]
    assert not catalog.may_create(principal, OFF)
    for token in (limited, reading):
        with pytest.raises(PermissionDenied, match="this token may not create feeds"):
            catalog.resolve(token, "garden", "rain", ON, create=False)
        with pytest.raises(PermissionDenied, match="this token may not create feeds"):
            catalog.new_feed(token, "garden", 0, catalog.FeedSpec(y_cast="int"))
    # The service account passes on messages of publishers it does not know: nobody to own a new feed.
    with pytest.raises(UnknownFeed) as unknown:
        catalog.resolve(SERVICE, "garden", "rain", ON, create=True)
    assert unknown.value.code == "unknown_feed" and unknown.value.detail == {}
    assert unknown.value.message.startswith("no feed named 'garden': create it first")
    assert names(Feed) == []


def test_the_feed_quota_counts_on_every_way_to_create_a_feed(owner: User) -> None:
    principal = principal_for(owner)
    quota = catalog.Policy(auto_create=True, feed_quota=2)
    catalog.new_feed(principal, "one", 2)
    catalog.resolve(principal, "two", "a", quota, create=True)
    for attempt in (
        lambda: catalog.resolve(principal, "three", "a", quota, create=False),
        lambda: catalog.resolve(principal, "three", "a", quota, create=True),
        lambda: catalog.new_feed(principal, "three", 2),
    ):
        with pytest.raises(QuotaExceeded) as refused:
            attempt()
        assert refused.value.code == "feed_quota" and refused.value.status == 403
        assert refused.value.message.startswith("feed quota reached: owner@example.com owns 2 feeds and may own 2")
    # Writing to feeds one owns is not creating one; admins and a quota of 0 have no limit.
    assert catalog.resolve(principal, "two", "b", quota, create=True).created
    admin = principal_for(user("admin@example.com", admin=True))
    for n in range(3):
        catalog.resolve(admin, f"admin_{n}", "a", quota, create=True)
    catalog.new_feed(principal, "three", 0)
    with pytest.raises(PermissionDenied, match="unknown user"):
        catalog.check_feed_quota(12345, 2)


def test_writing_needs_the_write_permission(owner: User, feed: Feed) -> None:
    stranger = principal_for(user("stranger@example.com"))
    with pytest.raises(PermissionDenied) as refused:
        catalog.resolve(stranger, "kitchen", "door", ON, create=False)
    assert refused.value.as_dict() == {
        "error": "you may not write to feed 'kitchen'", "code": "forbidden", "feed": "kitchen"
    }
    Share.create(feed=feed, user=stranger.user_id, access="read")
    with pytest.raises(PermissionDenied):
        catalog.resolve(stranger, "kitchen", "new_axis", ON, create=True)
    assert names(Axis) == ["door"]  # a refused writer creates no axis either
    Share.create(feed=feed, user=stranger.user_id, access="write")
    assert catalog.resolve(stranger, "kitchen", "new_axis", ON, create=True).owner_id == feed.owner_id
    assert catalog.resolve(SERVICE, "kitchen", "door", OFF, create=False).axis_id is not None


def test_a_feed_made_by_someone_else_between_check_and_create(owner: User) -> None:
    """Checked while missing; by the time the payload decoded, another user made it."""
    other = principal_for(user("other@example.com"))
    assert catalog.resolve(other, "contested", "a", ON, create=False).pending
    create_feed("contested", owner, y_cast="int")
    with pytest.raises(PermissionDenied, match="you may not write to feed 'contested'"):
        catalog.resolve(other, "contested", "a", ON, create=True)
    Share.create(feed=Feed.get(Feed.name == "contested"), user=other.user_id, access="write")
    made = catalog.resolve(other, "contested", "a", ON, create=True)
    # Not the new feed's default casts: the entrance must cast its payload again (or refuse it).
    assert made.owner_id == owner.id and made.casts == Casts(XCast.DATETIME, YCast.INT)


def test_several_axes_in_one_call_keep_their_order(owner: User, feed: Feed) -> None:
    principal = principal_for(owner)
    checked = catalog.resolve_axes(principal, "kitchen", ["window", "door"], ON, create=False)
    assert [(t.axis, t.pending) for t in checked] == [("window", True), ("door", False)]
    made = catalog.resolve_axes(principal, "kitchen", ["window", "door"], ON, create=True)
    assert [(t.axis, t.created, t.pending) for t in made] == [("window", True, False), ("door", False, False)]
    new = catalog.resolve_axes(principal, "hall", ["b", "a"], ON, create=True)
    assert [t.axis for t in new] == ["b", "a"] and all(t.created for t in new)


def test_a_new_feed_is_made_to_the_spec_and_a_lookup_may_be_a_cache(owner: User) -> None:
    spec = catalog.FeedSpec(XCast.DATETIME, YCast.INT, description="emulated")
    looked_up: list[str] = []

    def lookup(name: str) -> Feed | None:
        looked_up.append(name)
        return catalog.find_feed_row(name)

    pending = catalog.resolve(principal_for(owner), "cpu", "load", ON, create=False, spec=spec, lookup=lookup)
    assert pending.casts == spec.casts
    catalog.resolve(principal_for(owner), "cpu", "load", ON, create=True, spec=spec, lookup=lookup)
    feed = Feed.get(Feed.name == "cpu")
    assert (feed.y_cast, feed.description) == ("int", "emulated")
    assert looked_up == ["cpu", "cpu"]


def test_writers_racing_to_create_one_place_all_get_it(owner: User, any_db: pw.Database) -> None:
    """Eight requests or messages for a new feed and axis at once: one creates, all write to the same place."""
    principal = principal_for(owner)
    barrier = threading.Barrier(8)
    targets: list[catalog.Target] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            targets.append(catalog.resolve(principal, "racy", "a", ON, create=True))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            any_db.close()  # each thread has its own connection

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len({(t.feed_id, t.axis_id) for t in targets}) == 1 and len(targets) == 8
    assert sum(t.created for t in targets) >= 1
    assert names(Feed) == ["racy"] and names(Axis) == ["a"]
