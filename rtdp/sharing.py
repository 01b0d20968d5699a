"""Sharing a feed: with a user or a group, to read or to write; making it public or private; giving it
to another owner. The feed page, the API (viewer.sharing_api) and `rtdp share` all call these.

Who may: the feed's manager (`permissions.may_manage`: its owner or an admin, not a token limited to
one feed); the command line acts as `permissions.OPERATOR`. Every change bumps the rights revision
(rtdp.revision) in its transaction, so cached decisions everywhere drop it within moments: an open SSE
stream or MQTT subscription stops delivering once a share that allowed it is gone.

Giving a feed away: the new owner must be an active user within the feed quota (an admin or the
command line may exceed it); the previous owner keeps a write share, so their devices keep working
until the new owner removes it. Synchronous (Peewee): callers run these in their database pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee as pw

from rtdp import revision
from rtdp.catalog import check_feed_quota
from rtdp.errors import InvalidInput, NotFound, PermissionDenied
from rtdp.models import MAX_ID, Feed, Group, Share, User
from rtdp.permissions import Access, Principal, allowed, may_manage


@dataclass(frozen=True, slots=True)
class ShareView:
    """One share as pages, the API and the CLI show it: with a user (email) or a group (name)."""

    id: int
    feed: str
    access: Access
    user: str | None = None
    group: str | None = None

    @property
    def grantee(self) -> str:
        return f"user {self.user}" if self.user is not None else f"group {self.group}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "feed": self.feed, "user": self.user, "group": self.group, "access": self.access.value}


def managed_feed(actor: Principal, name: str) -> Feed:
    """The feed `name` if `actor` (someone signed in) may manage it: NotFound or PermissionDenied, as
    the API answers signed-in callers for any feed route (viewer.access)."""
    feed = Feed.get_or_none(Feed.name == name[:64]) if len(name) <= 64 else None
    if feed is None:
        raise NotFound(f"no feed named {name[:64]!r}", feed=name[:64])
    if not allowed(actor, feed, Access.READ):
        raise PermissionDenied(f"you may not read feed {name!r}", feed=name)
    if not may_manage(actor, feed):
        raise PermissionDenied(f"only the owner or an administrator may share feed {name!r}", feed=name)
    return feed


def _view(share: Share, feed: Feed) -> ShareView:
    return ShareView(
        id=share.id,
        feed=feed.name,
        access=Access(share.access),
        user=share.user.email if share.user is not None else None,
        group=share.group.name if share.group is not None else None,
    )


def shares_of(feed: Feed) -> list[ShareView]:
    """The feed's shares, users first, then groups, each by name."""
    rows = (
        Share.select(Share, User, Group)
        .join(User, on=(Share.user == User.id), join_type=pw.JOIN.LEFT_OUTER)
        .switch(Share)
        .join(Group, on=(Share.group == Group.id), join_type=pw.JOIN.LEFT_OUTER)
        .where(Share.feed == feed.id)
    )
    views = [_view(share, feed) for share in rows]
    return sorted(views, key=lambda v: (v.user is None, v.user or v.group or ""))


def list_shares(actor: Principal, name: str) -> list[ShareView]:
    return shares_of(managed_feed(actor, name))


def _access(value: str | Access) -> Access:
    try:
        return Access(value)
    except ValueError:
        raise InvalidInput(f"access must be 'read' or 'write', got {str(value)[:20]!r}", field="access") from None


def _user(email: str, field: str) -> User:
    found = User.get_or_none(User.email == email.strip().lower()[:254])
    if found is None:
        raise NotFound(f"no user with email {email[:80]!r}", field=field)
    return found


def find_grantee(user: str | None, group: str | None) -> tuple[User | None, Group | None]:
    """The user (email) or the group (name) to share something with: exactly one of them."""
    if (user is None) == (group is None):
        raise InvalidInput("share with exactly one of a user (email) or a group (name)", field="user")
    if user is not None:
        return _user(user, "user"), None
    assert group is not None
    named = Group.get_or_none(Group.name == group.strip()[:64])
    if named is None:
        raise NotFound(f"no group named {group[:64]!r}", field="group")
    return None, named


def add_share(
    actor: Principal,
    name: str,
    *,
    user: str | None = None,
    group: str | None = None,
    access: str | Access = Access.READ,
) -> ShareView:
    """Share feed `name` with a user (email) or a group (name); a second share with the same user or
    group changes its access instead of adding one."""
    wanted = _access(access)
    with Feed._meta.database.atomic():
        feed = managed_feed(actor, name)
        member, team = find_grantee(user, group)
        if member is not None and member.id == feed.owner_id:
            raise InvalidInput(f"{member.email} owns feed {feed.name!r} already", field="user")
        who = (Share.user == member.id) if member is not None else (Share.group == team.id)  # type: ignore[union-attr]
        share = Share.get_or_none((Share.feed == feed.id) & who)
        if share is None:
            share = Share.create(feed=feed, user=member, group=team, access=wanted.value)
        elif share.access != wanted.value:
            Share.update(access=wanted.value).where(Share.id == share.id).execute()
            share.access = wanted.value
        revision.bump()
        return _view(share, feed)


def remove_share(actor: Principal, name: str, share_id: int) -> ShareView:
    """Remove share `share_id` of feed `name`; what was removed."""
    with Feed._meta.database.atomic():
        feed = managed_feed(actor, name)
        # An id beyond any row's matches nothing (and would overflow SQLite's integers).
        share = Share.get_or_none((Share.id == share_id) & (Share.feed == feed.id)) if share_id <= MAX_ID else None
        if share is None:
            raise NotFound(f"feed {feed.name!r} has no share {share_id}", field="id")
        removed = _view(share, feed)
        share.delete_instance()
        revision.bump()
        return removed


def set_public(actor: Principal, name: str, public: bool) -> Feed:
    """Make feed `name` readable by everyone (also without signing in), or not."""
    with Feed._meta.database.atomic():
        feed = managed_feed(actor, name)
        Feed.update(public=public).where(Feed.id == feed.id).execute()
        feed.public = public
        revision.bump()
        return feed


def transfer(actor: Principal, name: str, new_owner: str, *, quota: int = 0) -> Feed:
    """Give feed `name` to the user with email `new_owner` (see the module docstring); `quota` is
    `Settings.feed_quota`."""
    with Feed._meta.database.atomic():
        feed = managed_feed(actor, name)
        target = _user(new_owner, "owner")
        if not target.is_active:
            raise InvalidInput(f"{target.email} is disabled and cannot own feeds", field="owner")
        previous = feed.owner_id
        if target.id == previous:
            return feed
        if not (actor.service or actor.is_admin):
            check_feed_quota(target.id, quota)
        Share.delete().where((Share.feed == feed.id) & (Share.user == target.id)).execute()
        Feed.update(owner=target.id).where(Feed.id == feed.id).execute()
        old = Share.get_or_none((Share.feed == feed.id) & (Share.user == previous))
        if old is None:
            Share.create(feed=feed, user=previous, access=Access.WRITE.value)
        else:
            Share.update(access=Access.WRITE.value).where(Share.id == old.id).execute()
        revision.bump()
        return Feed.get_by_id(feed.id)

