"""Administering users: list, disable and enable, remove, reset a password, make or unmake an admin.
The /admin/users page, the API (viewer.users_api) and `rtdp user ...` call these. Administrators only
(the command line acts as `permissions.OPERATOR`).

Removing a user removes everything they own: their feeds with every axis and point, their tokens,
shares and memberships. To keep their feeds, give them to someone else first, or pass `feeds_to`:
the feeds then change owner in the same transaction. A user who should only stop using the server
is better disabled: nothing is deleted, and enabling them again restores everything.

Guards against locking the server out: an administrator may not disable, remove or unmake
themselves, and the last active administrator stays one.

Every change bumps the rights revision (rtdp.revision), so open connections of a disabled user end
at once, not when their cached login expires; a password reset also ends the user's sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee as pw

from rtdp import revision
from rtdp.accounts import get_user
from rtdp.credentials import check_new_password, hash_password
from rtdp.errors import Conflict, InvalidInput, PermissionDenied
from rtdp.models import BrowserSession, Feed, User
from rtdp.permissions import Principal, may_administer


@dataclass(frozen=True, slots=True)
class UserView:
    email: str
    display_name: str
    admin: bool
    active: bool
    created: float
    feeds: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "display_name": self.display_name,
            "admin": self.admin,
            "active": self.active,
            "created": self.created,
            "feeds": self.feeds,
        }


@dataclass(frozen=True, slots=True)
class Removal:
    """What removing a user did to their feeds."""

    email: str
    feeds_deleted: list[str]
    feeds_given: list[str]
    given_to: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed": self.email,
            "feeds_deleted": self.feeds_deleted,
            "feeds_given": self.feeds_given,
            "given_to": self.given_to,
        }


def require_admin(actor: Principal) -> None:
    if not may_administer(actor):
        raise PermissionDenied("only an administrator may manage users")


def _view(user: User, feeds: int) -> UserView:
    return UserView(user.email, user.display_name, bool(user.is_admin), bool(user.is_active), user.created, feeds)


def _feed_count(user: User) -> int:
    return int(Feed.select().where(Feed.owner == user.id).count())


def list_users(actor: Principal) -> list[UserView]:
    require_admin(actor)
    rows: Any = Feed.select(Feed.owner, pw.fn.COUNT(Feed.id)).group_by(Feed.owner).tuples()
    counts: dict[int, int] = {owner_id: count for owner_id, count in rows}
    return [_view(user, int(counts.get(user.id, 0))) for user in User.select().order_by(User.email)]


def _not_self(actor: Principal, user: User, action: str) -> None:
    if not actor.service and actor.user_id == user.id:
        raise Conflict(f"you may not {action} yourself: ask another administrator", field="user")


def _keep_an_admin(user: User) -> None:
    others = User.select().where((User.is_admin == True) & (User.is_active == True) & (User.id != user.id))  # noqa: E712
    if user.is_admin and not others.exists():
        raise Conflict(f"{user.email} is the last active administrator", field="user")


def set_active(actor: Principal, email: str, active: bool) -> UserView:
    """Disable (no login, no token, open connections end) or enable a user; nothing is deleted."""
    return _set_flag(actor, email, User.is_active, active, "disable")


def set_admin(actor: Principal, email: str, admin: bool) -> UserView:
    return _set_flag(actor, email, User.is_admin, admin, "unmake an administrator of")


def _set_flag(actor: Principal, email: str, flag: pw.BooleanField, on: bool, taking_away: str) -> UserView:
    require_admin(actor)
    with User._meta.database.atomic():
        user = get_user(email)
        if not on:
            _not_self(actor, user, taking_away)
            _keep_an_admin(user)
        User.update({flag: on}).where(User.id == user.id).execute()
        if flag is User.is_active and not on:
            BrowserSession.delete().where(BrowserSession.user == user.id).execute()  # signed out everywhere
        revision.bump()
        return _view(get_user(email), _feed_count(user))


def set_password(actor: Principal, email: str, password: str) -> UserView:
    """A new password (the one password rule applies); the user's sessions end."""
    require_admin(actor)
    check_new_password(password)
    hashed = hash_password(password)
    with User._meta.database.atomic():
        user = get_user(email)
        User.update(password_hash=hashed, session_version=User.session_version + 1).where(User.id == user.id).execute()
        BrowserSession.delete().where(BrowserSession.user == user.id).execute()
        revision.bump()
        return _view(user, _feed_count(user))


def remove_user(actor: Principal, email: str, feeds_to: str | None = None) -> Removal:
    """Remove the user and all they own; with `feeds_to`, their feeds go to that user instead."""
    require_admin(actor)
    with User._meta.database.atomic():
        user = get_user(email)
        _not_self(actor, user, "remove")
        _keep_an_admin(user)
        heir = get_user(feeds_to) if feeds_to else None
        if heir is not None and heir.id == user.id:
            raise InvalidInput("give the feeds to someone else than the user removed", field="feeds_to")
        names = [feed.name for feed in Feed.select(Feed.name).where(Feed.owner == user.id).order_by(Feed.name)]
        if heir is not None:
            Feed.update(owner=heir.id).where(Feed.owner == user.id).execute()
        # The database cascades to feeds (their axes and points), tokens, shares and memberships.
        User.delete().where(User.id == user.id).execute()
        revision.bump()
    if heir is not None:
        return Removal(user.email, [], names, heir.email)
    return Removal(user.email, names, [], None)
