"""rtdp.groups against SQLite and PostgreSQL: admins manage groups, members gain the group's shares."""

from __future__ import annotations

import peewee as pw
import pytest

from rtdp import groups, revision, sharing
from rtdp.accounts import create_token, principal_for
from rtdp.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from rtdp.models import Feed, Share, User
from rtdp.permissions import OPERATOR, Access, allowed
from rtdp.store import create_feed
from tests.rtdp.test_permissions import user


@pytest.fixture
def people(any_db: pw.Database) -> dict[str, User]:
    return {"admin": user("admin@x.org", True), "ep": user("ep@nothing.com"), "ap": user("ap@nothing.com")}


def test_admins_make_groups_and_members_gain_their_shares(people: dict[str, User]) -> None:
    admin = principal_for(people["admin"])
    ap = principal_for(people["ap"])
    feed = create_feed("feed_a", people["ep"])
    assert groups.create_group(admin, "lab", "the lab") == groups.GroupView("lab", "the lab", [])
    sharing.add_share(OPERATOR, "feed_a", group="lab")
    assert not allowed(ap, feed, Access.READ)

    before = revision.current()
    assert groups.add_member(admin, "lab", "AP@nothing.com").members == ["ap@nothing.com"]
    assert groups.add_member(admin, "lab", "ap@nothing.com").members == ["ap@nothing.com"]  # once
    assert allowed(ap, feed, Access.READ) and revision.current() == before + 1

    assert groups.remove_member(admin, "lab", "ap@nothing.com").members == []
    assert not allowed(ap, feed, Access.READ) and revision.current() == before + 2
    with pytest.raises(NotFound):
        groups.remove_member(admin, "lab", "ap@nothing.com")

    groups.remove_group(OPERATOR, "lab")
    assert groups.list_groups(admin) == [] and Share.select().count() == 0
    assert Feed.get_by_id(feed.id).name == "feed_a"


def test_users_see_names_and_the_members_of_their_own_groups(people: dict[str, User]) -> None:
    groups.create_group(OPERATOR, "lab")
    groups.create_group(OPERATOR, "ops")
    groups.add_member(OPERATOR, "lab", "ap@nothing.com")
    assert groups.list_groups(principal_for(people["ap"])) == [
        groups.GroupView("lab", "", ["ap@nothing.com"]),
        groups.GroupView("ops", "", None),
    ]
    assert [g.members for g in groups.list_groups(principal_for(people["admin"]))] == [["ap@nothing.com"], []]


def test_only_admins_manage_groups(people: dict[str, User]) -> None:
    ep = principal_for(people["ep"])
    device_token = create_token(people["admin"], feed=create_feed("f", people["admin"]))
    admin_device = principal_for(people["admin"], device_token.row)
    for actor in (ep, admin_device):
        with pytest.raises(PermissionDenied):
            groups.create_group(actor, "mine")
    groups.create_group(OPERATOR, "lab")
    with pytest.raises(PermissionDenied):
        groups.add_member(ep, "lab", "ep@nothing.com")
    with pytest.raises(PermissionDenied):
        groups.remove_group(ep, "lab")


def test_bad_names_and_duplicates(people: dict[str, User]) -> None:
    groups.create_group(OPERATOR, "lab")
    with pytest.raises(Conflict):
        groups.create_group(OPERATOR, "lab")
    for name in ("", "a/b", "x" * 65):
        with pytest.raises(InvalidInput):
            groups.create_group(OPERATOR, name)
    with pytest.raises(InvalidInput):
        groups.create_group(OPERATOR, "long", "x" * 501)
    with pytest.raises(NotFound):
        groups.add_member(OPERATOR, "nogroup", "ep@nothing.com")
    with pytest.raises(NotFound):
        groups.add_member(OPERATOR, "lab", "nobody@x.org")
    with pytest.raises(NotFound):
        groups.remove_group(OPERATOR, "nogroup")
