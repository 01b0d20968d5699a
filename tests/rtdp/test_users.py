"""rtdp.users against SQLite and PostgreSQL: what administrators may do to users, and what it costs."""

from __future__ import annotations

import peewee as pw
import pytest

from rtdp import revision, users
from rtdp.accounts import check_credentials, create_token, principal_for
from rtdp.credentials import verify_password
from rtdp.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, PermissionDenied
from rtdp.models import Axis, Feed, Point, Token, User
from rtdp.permissions import OPERATOR, Principal
from rtdp.store import create_axis, create_feed
from tests.rtdp.test_permissions import user


@pytest.fixture
def people(any_db: pw.Database) -> dict[str, User]:
    return {"admin": user("admin@x.org", True), "ep": user("ep@nothing.com"), "ap": user("ap@nothing.com")}


def admin(people: dict[str, User]) -> Principal:
    return principal_for(people["admin"])


def test_list_disable_enable(people: dict[str, User]) -> None:
    create_feed("feed_a", people["ep"])
    listed = users.list_users(admin(people))
    assert [(u.email, u.admin, u.active, u.feeds) for u in listed] == [
        ("admin@x.org", True, True, 0), ("ap@nothing.com", False, True, 0), ("ep@nothing.com", False, True, 1)
    ]
    token = create_token(people["ep"]).token
    before = revision.current()
    assert not users.set_active(admin(people), "ep@nothing.com", False).active
    assert revision.current() == before + 1
    with pytest.raises(AuthenticationFailed):
        check_credentials("x", token)
    assert users.set_active(admin(people), "ep@nothing.com", True).active
    assert check_credentials("x", token).email == "ep@nothing.com"


def test_admin_flag_and_the_last_admin(people: dict[str, User]) -> None:
    assert users.set_admin(admin(people), "ep@nothing.com", True).admin
    assert not users.set_admin(OPERATOR, "ep@nothing.com", False).admin
    # Not yourself, and never the last active administrator (also not from the command line).
    for action in (lambda: users.set_admin(admin(people), "admin@x.org", False),
                   lambda: users.set_active(admin(people), "admin@x.org", False),
                   lambda: users.remove_user(admin(people), "admin@x.org"),
                   lambda: users.set_admin(OPERATOR, "admin@x.org", False),
                   lambda: users.remove_user(OPERATOR, "admin@x.org")):
        with pytest.raises(Conflict):
            action()
    assert User.get(User.email == "admin@x.org").is_admin


def test_password_reset_follows_the_one_rule_and_ends_sessions(people: dict[str, User]) -> None:
    with pytest.raises(InvalidInput):
        users.set_password(admin(people), "ep@nothing.com", "1234")
    version = User.get(User.email == "ep@nothing.com").session_version
    users.set_password(admin(people), "ep@nothing.com", "a-long-password")
    changed = User.get(User.email == "ep@nothing.com")
    assert verify_password(changed.password_hash, "a-long-password") and changed.session_version == version + 1


def test_removing_a_user_deletes_what_they_own_unless_given_away(people: dict[str, User]) -> None:
    feed = create_feed("feed_a", people["ep"])
    create_axis(feed, "a")
    create_token(people["ep"])
    removal = users.remove_user(admin(people), "ep@nothing.com")
    assert removal.as_dict() == {"removed": "ep@nothing.com", "feeds_deleted": ["feed_a"], "feeds_given": [],
                                 "given_to": None}
    assert Feed.select().count() == 0 and Axis.select().count() == 0 and Token.select().count() == 0

    create_feed("feed_b", people["ap"])
    given = users.remove_user(OPERATOR, "ap@nothing.com", feeds_to="admin@x.org")
    assert (given.feeds_deleted, given.feeds_given, given.given_to) == ([], ["feed_b"], "admin@x.org")
    assert Feed.get(Feed.name == "feed_b").owner_id == people["admin"].id
    assert Point.select().count() == 0
    with pytest.raises(NotFound):
        users.remove_user(OPERATOR, "ap@nothing.com")


def test_only_admins_and_not_through_a_device_token(people: dict[str, User]) -> None:
    device = principal_for(people["admin"], create_token(people["admin"], feed=create_feed("f", people["admin"])).row)
    for actor in (principal_for(people["ep"]), device):
        with pytest.raises(PermissionDenied):
            users.list_users(actor)
        with pytest.raises(PermissionDenied):
            users.set_admin(actor, "ep@nothing.com", True)
    with pytest.raises(InvalidInput):
        users.remove_user(OPERATOR, "ep@nothing.com", feeds_to="ep@nothing.com")
