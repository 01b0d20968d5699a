"""rtdp.sharing against SQLite and PostgreSQL: who may share, what a share allows, and that every change
moves the rights revision that caches watch."""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw
import pytest

from rtdp import revision, sharing
from rtdp.accounts import create_token, principal_for
from rtdp.errors import InvalidInput, NotFound, PermissionDenied, QuotaExceeded
from rtdp.models import MAX_ID, Feed, Group, Membership, Share, User
from rtdp.permissions import OPERATOR, Access, Principal, allowed
from rtdp.store import create_feed
from tests.rtdp.test_permissions import user


@dataclass
class World:
    ep: User
    ap: User
    admin: User
    member: User
    feed: Feed
    group: Group



@pytest.fixture
def world(any_db: pw.Database) -> World:
    ep, ap, admin, member = user("ep@nothing.com"), user("ap@nothing.com"), user("admin@x.org", True), user("m@x.org")
    group = Group.create(name="lab")
    Membership.create(user=member, group=group)
    return World(ep, ap, admin, member, create_feed("feed_a", ep), group)


def p(u: User) -> Principal:
    return principal_for(u)


def feed(name: str = "feed_a") -> Feed:
    found: Feed = Feed.get(Feed.name == name)
    return found


def test_a_user_share_allows_reading_then_writing_and_its_removal_ends_both(world: World) -> None:
    before = revision.current()
    share = sharing.add_share(p(world.ep), "feed_a", user="AP@nothing.com")
    assert (share.user, share.group, share.access) == ("ap@nothing.com", None, Access.READ)
    assert allowed(p(world.ap), feed(), Access.READ) and not allowed(p(world.ap), feed(), Access.WRITE)
    # Sharing again with the same user changes the access of the one share.
    again = sharing.add_share(p(world.ep), "feed_a", user="ap@nothing.com", access="write")
    assert again.id == share.id and Share.select().count() == 1
    assert allowed(p(world.ap), feed(), Access.WRITE)
    assert sharing.list_shares(p(world.ep), "feed_a") == [again]
    assert revision.current() == before + 2

    removed = sharing.remove_share(p(world.ep), "feed_a", share.id)
    assert removed == again and revision.current() == before + 3
    assert not allowed(p(world.ap), feed(), Access.READ)
    with pytest.raises(NotFound):
        sharing.remove_share(p(world.ep), "feed_a", share.id)
    with pytest.raises(NotFound):
        sharing.remove_share(p(world.ep), "feed_a", MAX_ID + 1)


def test_a_group_share_reaches_its_members_only(world: World) -> None:
    share = sharing.add_share(OPERATOR, "feed_a", group="lab", access=Access.WRITE)
    assert (share.user, share.group, share.grantee) == (None, "lab", "group lab")
    assert allowed(p(world.member), feed(), Access.WRITE)
    assert not allowed(p(world.ap), feed(), Access.READ)
    # Users first, then groups.
    sharing.add_share(OPERATOR, "feed_a", user="ap@nothing.com")
    assert [v.grantee for v in sharing.list_shares(OPERATOR, "feed_a")] == ["user ap@nothing.com", "group lab"]


def test_only_the_owner_an_admin_or_the_command_line_may_share(world: World) -> None:
    with pytest.raises(PermissionDenied):
        sharing.add_share(p(world.ap), "feed_a", user="ap@nothing.com")
    # A write share adds points, not readers.
    sharing.add_share(p(world.ep), "feed_a", group="lab", access="write")
    with pytest.raises(PermissionDenied):
        sharing.add_share(p(world.member), "feed_a", user="ap@nothing.com")
    with pytest.raises(PermissionDenied):
        sharing.list_shares(p(world.member), "feed_a")
    # A device's token limited to the feed may not share it either.
    device = principal_for(world.ep, create_token(world.ep, feed=feed()).row)
    with pytest.raises(PermissionDenied):
        sharing.set_public(device, "feed_a", True)
    assert sharing.add_share(p(world.admin), "feed_a", user="ap@nothing.com").user == "ap@nothing.com"


@pytest.mark.parametrize(
    ("grantee", "error"),
    [
        ({"user": "ep@nothing.com"}, InvalidInput),  # the owner
        ({"user": "nobody@x.org"}, NotFound),
        ({"group": "nogroup"}, NotFound),
        ({}, InvalidInput),
        ({"user": "ap@nothing.com", "group": "lab"}, InvalidInput),
        ({"user": "ap@nothing.com", "access": "admin"}, InvalidInput),
    ],
)
def test_bad_shares_are_refused_and_change_nothing(world: World, grantee: dict[str, str], error: type) -> None:
    before = revision.current()
    with pytest.raises(error):
        sharing.add_share(p(world.ep), "feed_a", **grantee)
    assert Share.select().count() == 0 and revision.current() == before


def test_public_on_and_off(world: World) -> None:
    before = revision.current()
    assert sharing.set_public(p(world.ep), "feed_a", True).public
    assert allowed(None, feed(), Access.READ) and not allowed(None, feed(), Access.WRITE)
    assert not sharing.set_public(p(world.ep), "feed_a", False).public
    assert not allowed(None, feed(), Access.READ)
    assert revision.current() == before + 2


def test_transfer_gives_the_feed_and_keeps_a_write_share_for_the_previous_owner(world: World) -> None:
    sharing.add_share(p(world.ep), "feed_a", user="ap@nothing.com")
    given = sharing.transfer(p(world.ep), "feed_a", "ap@nothing.com")
    assert given.owner_id == world.ap.id
    # ap's own share went (an owner needs none); ep keeps writing through one.
    kept = sharing.list_shares(p(world.ap), "feed_a")
    assert [(v.user, v.access) for v in kept] == [("ep@nothing.com", Access.WRITE)]
    assert allowed(p(world.ep), feed(), Access.WRITE)
    with pytest.raises(PermissionDenied):
        sharing.list_shares(p(world.ep), "feed_a")  # no longer ep's to manage


def test_transfer_respects_the_quota_and_refuses_disabled_users(world: World) -> None:
    create_feed("aps_own", world.ap)
    with pytest.raises(QuotaExceeded):
        sharing.transfer(p(world.ep), "feed_a", "ap@nothing.com", quota=1)
    # An admin may exceed it.
    assert sharing.transfer(p(world.admin), "feed_a", "ap@nothing.com", quota=1).owner_id == world.ap.id
    User.update(is_active=False).where(User.id == world.member.id).execute()
    with pytest.raises(InvalidInput):
        sharing.transfer(OPERATOR, "feed_a", "m@x.org")
    with pytest.raises(NotFound):
        sharing.transfer(OPERATOR, "feed_a", "nobody@x.org")
