"""The catalog: naming a point's place. Every entrance that writes points - the original URL, the batch
API, the embedded broker's ACL, the bridge's writer, the pages, the emulator - asks here for the feed and
axis a principal writes to, so the write permission, who may create feeds, the feed and axis quotas
and auto-create are decided in this one module.

Two steps for writers: `resolve(..., create=False)` checks everything and writes nothing; a feed or axis
that auto-create would make comes back `pending`, with the casts a new feed gets. The entrance casts its
payload with them and only then calls `resolve(..., create=True)`, so bad input leaves no empty feed or
axis behind. The feed quota is counted in both steps; the broker's ACL, which answers per message from
a cache, asks only `may_create` (no database) and leaves the counting to the writer.

Synchronous (Peewee): call it from a thread (the viewer's pool, the broker's pool, the writer thread).
Callers cache what it answers (viewer decisions, the ACL's decisions, bridge.routes): lookups of feed
rows go through `lookup`, which a cache may replace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts
from rtdp.errors import Conflict, NotFound, PermissionDenied, QuotaExceeded, UnknownFeed
from rtdp.models import Axis, Feed, User
from rtdp.permissions import Access, Principal, allowed
from rtdp.settings import Settings
from rtdp.store import check_axis_quota, create_axis, create_feed, feed_casts, get_axis, get_feed

FeedLookup = Callable[[str], Feed | None]


def find_feed_row(name: str) -> Feed | None:
    return Feed.get_or_none(Feed.name == name)


@dataclass(frozen=True, slots=True)
class Policy:
    """What writing may create on the way, from the settings: once per process."""

    auto_create: bool = True  # unknown feeds (for principals that may create feeds) and axes
    feed_quota: int = 0  # feeds a non-admin may own; 0: no limit
    axis_quota: int = 0  # axes a feed may have; 0: no limit

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(settings.auto_create, settings.feed_quota, settings.axis_quota)


# The operator's own tools (the emulator, like `rtdp feed add`): they create what they need, unlimited.
OPERATOR = Policy(auto_create=True, feed_quota=0, axis_quota=0)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """What a new feed is made with: the model's defaults unless the entrance knows better. Checked by
    the store when the feed is made (an unknown cast is InvalidInput there)."""

    x_cast: str = XCast.DATETIME.value
    y_cast: str = YCast.FLOAT.value
    description: str = ""
    public: bool = False
    retention_days: float | None = None
    retention_points: int | None = None

    @property
    def casts(self) -> Casts:
        return Casts(XCast(self.x_cast), YCast(self.y_cast))

    def create(self, name: str, owner_id: int) -> Feed:
        return create_feed(
            name,
            owner_id,
            x_cast=self.x_cast,
            y_cast=self.y_cast,
            description=self.description,
            public=self.public,
            retention_days=self.retention_days,
            retention_points=self.retention_points,
        )


NEW_FEED = FeedSpec()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a principal's points go: checked, and (unless `pending`) existing."""

    feed: str
    axis: str
    casts: Casts
    feed_id: int | None = None  # None: the feed is still to be created (see `resolve`)
    axis_id: int | None = None  # None: the axis is still to be created
    owner_id: int | None = None
    created: bool = False  # this call created the feed or the axis

    @property
    def pending(self) -> bool:
        return self.axis_id is None

    @property
    def y_cast(self) -> YCast:
        return self.casts.y


def may_create_feeds(principal: Principal) -> bool:
    """A token limited to one feed or to reading must not create feeds of its own; nor may the service
    account (a message it passes on names no person to own a new feed)."""
    return not principal.service and principal.token_feed_id is None and principal.token_access is not Access.READ


def may_create(principal: Principal, policy: Policy) -> bool:
    """Whether writing to a missing feed may create it, before the quota is counted (no database)."""
    return policy.auto_create and may_create_feeds(principal)


def check_creation(principal: Principal, name: str, policy: Policy) -> None:
    """Writing to feed `name`, which does not exist, may create it: auto-create is on, the principal may
    create feeds and is within its feed quota. Raises the reason otherwise."""
    if principal.service:
        raise UnknownFeed(
            f"no feed named {name!r}: create it first (the bridge creates feeds only for publishers "
            "it knows, through the embedded broker of rtdp serve)"
        )
    if not policy.auto_create:
        raise NotFound(f"no feed named {name!r} (auto-create is off)", feed=name)
    if not may_create_feeds(principal):
        raise PermissionDenied("this token may not create feeds", feed=name)
    check_feed_quota(principal.user_id, policy.feed_quota)


def check_feed_quota(owner_id: int, quota: int) -> None:
    """Raise QuotaExceeded if the user may not own one more feed: a non-admin owning `quota` feeds
    already (0: no limit)."""
    if quota <= 0:
        return
    user = User.get_or_none(User.id == owner_id)
    if user is None:
        raise PermissionDenied("unknown user: no feed created")
    if user.is_admin:
        return
    owned = Feed.select(Feed.id).where(Feed.owner == owner_id).count()
    if owned >= quota:
        raise QuotaExceeded(
            f"feed quota reached: {user.email} owns {owned} feeds and may own {quota}; "
            "delete a feed or ask an administrator",
            quota=quota,
        )


def new_feed(principal: Principal, name: str, quota: int, spec: FeedSpec = NEW_FEED) -> Feed:
    """A feed created on purpose (API, pages), owned by `principal`, within its feed quota."""
    if not may_create_feeds(principal):
        raise PermissionDenied("this token may not create feeds")
    check_feed_quota(principal.user_id, quota)
    return spec.create(name, principal.user_id)


def resolve(
    principal: Principal,
    feed_name: str,
    axis_name: str,
    policy: Policy,
    *,
    create: bool,
    spec: FeedSpec = NEW_FEED,
    lookup: FeedLookup = find_feed_row,
) -> Target:
    """The place of `principal`'s points on `feed_name`/`axis_name` (names already checked)."""
    return resolve_axes(principal, feed_name, (axis_name,), policy, create=create, spec=spec, lookup=lookup)[0]


def resolve_axes(
    principal: Principal,
    feed_name: str,
    axis_names: Sequence[str],
    policy: Policy,
    *,
    create: bool,
    spec: FeedSpec = NEW_FEED,
    lookup: FeedLookup = find_feed_row,
) -> list[Target]:
    """`resolve` for several axes of one feed, in the order given: one query for all the axes.

    Raises UnknownFeed (missing feed, not to be created), PermissionDenied or QuotaExceeded (may not
    write or create), NotFound (missing axis with auto-create off). With `create=False` nothing is
    written; with `create=True` the missing feed (owned by `principal`, made with `spec`) and axes are
    created. A feed someone else made meanwhile is used if `principal` may write to it."""
    feed = lookup(feed_name)
    created_feed = False
    if feed is None:
        check_creation(principal, feed_name, policy)
        if not create:
            return [Target(feed_name, name, spec.casts) for name in axis_names]
        try:
            feed = spec.create(feed_name, principal.user_id)
            created_feed = True
        except Conflict:
            feed = get_feed(feed_name)  # created by someone else in between
    if not allowed(principal, feed, Access.WRITE):
        raise PermissionDenied(f"you may not write to feed {feed_name!r}", feed=feed_name)
    casts = feed_casts(feed)
    owner_id = _owner_id(feed)
    query = Axis.select(Axis.id, Axis.name).where((Axis.feed == feed.id) & Axis.name.in_(list(axis_names)))
    ids: dict[str, int] = {axis.name: axis.id for axis in query}
    missing = sorted(set(axis_names) - set(ids))
    if missing and not policy.auto_create:
        raise NotFound(f"feed {feed_name!r} has no axis {missing[0]!r} (auto-create is off)", axis=missing[0])
    if missing:
        check_axis_quota(feed, policy.axis_quota, len(missing))  # before making any of them
    made: set[str] = set()
    if create:
        for name in missing:
            try:
                ids[name] = create_axis(feed, name, quota=policy.axis_quota).id
                made.add(name)
            except Conflict:
                ids[name] = get_axis(feed, name).id  # created by someone else in between
    return [
        Target(feed_name, name, casts, feed.id, ids.get(name), owner_id, created_feed or name in made)
        for name in axis_names
    ]


def _owner_id(feed: Feed) -> int:
    # Peewee's `<field>_id` attributes are created at run time; the type stubs do not know them.
    owner_id: int = feed.owner_id  # type: ignore[attr-defined]
    return owner_id
