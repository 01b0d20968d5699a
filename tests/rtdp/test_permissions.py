from __future__ import annotations

import itertools

import peewee as pw
import pytest

from rtdp.accounts import create_token, principal_for
from rtdp.models import Feed, Group, Membership, Share, User
from rtdp.permissions import Access, Principal, allowed, readable_feeds
from rtdp.store import create_feed


def user(email: str, admin: bool = False) -> User:
    # Not create_user: argon2 is slow by design and these tests never log in with a password.
    return User.create(email=email, password_hash="unused", is_admin=admin)


@pytest.fixture
def world(any_db: pw.Database) -> dict[str, object]:
    ep = user("ep@nothing.com")
    ap = user("ap@nothing.com")
    admin = user("admin@example.com", admin=True)
    reader = user("reader@example.com")
    writer = user("writer@example.com")
    member = user("member@example.com")
    group_writer = user("gwriter@example.com")
    stranger = user("stranger@example.com")
    feed_a = create_feed("manual_feed_a", ep)
    public = create_feed("public_feed", ep, public=True)
    feed_aj = create_feed("manual_feed_aj", ap)
    Share.create(feed=feed_a, user=reader, access="read")
    Share.create(feed=feed_a, user=writer, access="write")
    readers = Group.create(name="readers")
    writers = Group.create(name="writers")
    Membership.create(user=member, group=readers)
    Membership.create(user=group_writer, group=writers)
    Share.create(feed=feed_aj, group=readers, access="read")
    Share.create(feed=feed_aj, group=writers, access="write")
    return {
        "users": dict(ep=ep, ap=ap, admin=admin, reader=reader, writer=writer, member=member,
                      group_writer=group_writer, stranger=stranger),
        "feeds": dict(a=feed_a, public=public, aj=feed_aj),
    }


def p(u: object) -> Principal:
    assert isinstance(u, User)
    return principal_for(u)


def test_owner_reads_and_writes(world: dict) -> None:
    ep, feed_a = world["users"]["ep"], world["feeds"]["a"]
    assert allowed(p(ep), feed_a, Access.READ)
    assert allowed(p(ep), feed_a, Access.WRITE)


def test_ap_is_denied_eps_feed(world: dict) -> None:
    """The original's TODO: ap must not see or write ep's feeds."""
    ap, feed_a = world["users"]["ap"], world["feeds"]["a"]
    assert not allowed(p(ap), feed_a, Access.READ)
    assert not allowed(p(ap), feed_a, Access.WRITE)
    assert feed_a.id not in {f.id for f in readable_feeds(p(ap))}


def test_admin_reads_and_writes_everything(world: dict) -> None:
    admin = world["users"]["admin"]
    for feed in world["feeds"].values():
        assert allowed(p(admin), feed, Access.READ)
        assert allowed(p(admin), feed, Access.WRITE)


def test_public_feed_is_read_only_for_others(world: dict) -> None:
    public = world["feeds"]["public"]
    assert allowed(None, public, Access.READ)
    assert not allowed(None, public, Access.WRITE)
    assert allowed(p(world["users"]["stranger"]), public, Access.READ)
    assert not allowed(p(world["users"]["stranger"]), public, Access.WRITE)
    assert not allowed(None, world["feeds"]["a"], Access.READ)
    assert [f.name for f in readable_feeds(None)] == ["public_feed"]


def test_user_shares(world: dict) -> None:
    users, feed_a = world["users"], world["feeds"]["a"]
    assert allowed(p(users["reader"]), feed_a, Access.READ)
    assert not allowed(p(users["reader"]), feed_a, Access.WRITE)
    assert allowed(p(users["writer"]), feed_a, Access.READ)  # write implies read
    assert allowed(p(users["writer"]), feed_a, Access.WRITE)
    # A share on one feed says nothing about another.
    assert not allowed(p(users["writer"]), world["feeds"]["aj"], Access.READ)


def test_group_shares(world: dict) -> None:
    users, feed_aj = world["users"], world["feeds"]["aj"]
    assert allowed(p(users["member"]), feed_aj, Access.READ)
    assert not allowed(p(users["member"]), feed_aj, Access.WRITE)
    assert allowed(p(users["group_writer"]), feed_aj, Access.WRITE)
    assert not allowed(p(users["stranger"]), feed_aj, Access.READ)
    Membership.delete().where(Membership.user == users["member"]).execute()
    assert not allowed(p(users["member"]), feed_aj, Access.READ)


def test_token_limited_to_one_feed(world: dict) -> None:
    ep, feeds = world["users"]["ep"], world["feeds"]
    issued = create_token(ep, feed=feeds["a"])
    principal = principal_for(ep, issued.row)
    assert allowed(principal, feeds["a"], Access.WRITE)
    # ep owns `public` too, but this token is for `a` only (reading a public feed needs no token).
    assert not allowed(principal, feeds["public"], Access.WRITE)
    assert [f.name for f in readable_feeds(principal)] == ["manual_feed_a"]


def test_read_token_cannot_write(world: dict) -> None:
    ep, feed_a = world["users"]["ep"], world["feeds"]["a"]
    principal = principal_for(ep, create_token(ep, access=Access.READ).row)
    assert allowed(principal, feed_a, Access.READ)
    assert not allowed(principal, feed_a, Access.WRITE)
    write = principal_for(ep, create_token(ep, access=Access.WRITE).row)
    assert allowed(write, feed_a, Access.WRITE)
    assert allowed(write, feed_a, Access.READ)  # a device may watch its own errors topic


def test_admin_token_limited_to_a_feed_is_limited(world: dict) -> None:
    admin, feeds = world["users"]["admin"], world["feeds"]
    principal = principal_for(admin, create_token(admin, feed=feeds["aj"], access=Access.READ).row)
    assert allowed(principal, feeds["aj"], Access.READ)
    assert not allowed(principal, feeds["aj"], Access.WRITE)
    assert not allowed(principal, feeds["a"], Access.READ)
    assert [f.name for f in readable_feeds(principal)] == ["manual_feed_aj"]


def test_service_principal_may_do_anything(world: dict) -> None:
    service = Principal(user_id=0, email="svc", is_admin=True, service=True)
    for feed in world["feeds"].values():
        assert allowed(service, feed, Access.WRITE)
    assert {f.name for f in readable_feeds(service)} == {f.name for f in world["feeds"].values()}


def test_readable_feeds_agrees_with_allowed_for_every_pair(world: dict) -> None:
    users, feeds = world["users"], world["feeds"]
    principals: list[Principal | None] = [None, Principal(user_id=0, email="svc", service=True)]
    for u in users.values():
        principals.append(principal_for(u))
        for feed, access in itertools.product([None, *feeds.values()], [None, Access.READ, Access.WRITE]):
            principals.append(principal_for(u, create_token(u, feed=feed, access=access).row))
    checked = 0
    for principal in principals:
        listed = {f.id for f in readable_feeds(principal)}
        for feed in Feed.select():
            assert (feed.id in listed) == allowed(principal, feed, Access.READ), (principal, feed.name)
            checked += 1
    assert checked == len(principals) * 3
