"""The one permission rule: who may read or write a feed. Pages, API, SSE, HTTP ingestion and the
embedded broker's topic ACL all ask `allowed()`. Who may create a feed is rtdp.catalog's."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import peewee as pw

from rtdp.models import Feed, Membership, Share


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user, possibly through a token limited to one feed and/or one access."""

    user_id: int
    email: str
    is_admin: bool = False
    token_id: int | None = None
    token_feed_id: int | None = None
    token_access: Access | None = None
    # The internal service account (bridge, viewer): every topic, every feed.
    service: bool = False
    # A password login: the user's session_version then (a password change bumps it, which ends the
    # login when it is checked again). None for tokens and the service account.
    password_version: int | None = None

    @property
    def cache_key(self) -> tuple[int, int | None]:
        return (self.user_id, self.token_id)


def _token_permits(principal: Principal, feed_id: int, access: Access) -> bool:
    if principal.token_feed_id is not None and principal.token_feed_id != feed_id:
        return False
    # A write token also reads (like a write share): a device may watch its own errors topic.
    return not (principal.token_access is Access.READ and access is Access.WRITE)


def allowed(principal: Principal | None, feed: Feed, access: Access) -> bool:
    """Owner, admins and shares (write implies read) may; everyone may read a public feed."""
    if principal is None:
        return access is Access.READ and bool(feed.public)
    if principal.service:
        return True
    if not _token_permits(principal, feed.id, access):
        return False
    if principal.is_admin or feed.owner_id == principal.user_id:
        return True
    if access is Access.READ and feed.public:
        return True
    wanted = [Access.WRITE.value] if access is Access.WRITE else [Access.READ.value, Access.WRITE.value]
    groups = Membership.select(Membership.group).where(Membership.user == principal.user_id)
    query = Share.select(Share.id).where(
        (Share.feed == feed.id)
        & Share.access.in_(wanted)
        & ((Share.user == principal.user_id) | Share.group.in_(groups))
    )
    return bool(query.exists())


# The command line: it works on the database directly, as the administrator of the machine does.
OPERATOR = Principal(user_id=0, email="(command line)", service=True)


def may_manage(principal: Principal, feed: Feed) -> bool:
    """May change who may use the feed, its settings and its axes, or delete it: the owner or an admin,
    logged in or through a token for all their feeds that may write.

    A token limited to one feed is a device's: it reads and writes that feed's points (so a stolen one
    can still overwrite them), but it may not delete the feed, share it, make it public or rename its axes.
    A write share adds points and axes only."""
    if principal.token_feed_id is not None or not allowed(principal, feed, Access.WRITE):
        return False
    return principal.service or principal.is_admin or feed.owner_id == principal.user_id


def may_administer(principal: Principal) -> bool:
    """May manage users and groups: an admin signed in, or through a token that is not limited to one
    feed (a device's) or to reading."""
    return principal.service or (
        principal.is_admin and principal.token_feed_id is None and principal.token_access is None
    )


def readable_feeds(principal: Principal | None) -> pw.ModelSelect[Feed]:
    """Every feed `principal` may read, as a query (one rule, expressed in SQL for lists)."""
    query = Feed.select()
    if principal is not None and principal.service:
        return query
    if principal is None:
        return query.where(Feed.public == True)  # noqa: E712 -- peewee expression
    if principal.token_feed_id is not None:
        query = query.where(Feed.id == principal.token_feed_id)
    if principal.is_admin:
        return query
    groups = Membership.select(Membership.group).where(Membership.user == principal.user_id)
    shared = Share.select(Share.feed).where((Share.user == principal.user_id) | Share.group.in_(groups))
    return query.where((Feed.owner == principal.user_id) | (Feed.public == True) | Feed.id.in_(shared))  # noqa: E712
