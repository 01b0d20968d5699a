"""Feeds and axes: finding, creating and checking them. Synchronous (Peewee): call it from a thread,
never from an event loop."""

from __future__ import annotations

import peewee as pw

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts
from rtdp.errors import AxisQuotaExceeded, Conflict, InvalidInput, NotFound
from rtdp.models import Axis, Feed, User
from rtdp.topic import check_name


def feed_casts(feed: Feed) -> Casts:
    return Casts(XCast(feed.x_cast), YCast(feed.y_cast))


def get_feed(name: str) -> Feed:
    feed = Feed.get_or_none(Feed.name == name)
    if feed is None:
        raise NotFound(f"no feed named {name[:64]!r}", feed=name[:64])
    return feed


def get_axis(feed: Feed, name: str) -> Axis:
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == name))
    if axis is None:
        raise NotFound(f"feed {feed.name!r} has no axis named {name[:64]!r}", feed=feed.name, axis=name[:64])
    return axis


def create_feed(
    name: str,
    owner: User | int,
    *,
    x_cast: str = "datetime",
    y_cast: str = "float",
    description: str = "",
    public: bool = False,
    retention_days: float | None = None,
    retention_points: int | None = None,
) -> Feed:
    check_name(name, "feed")
    try:
        casts = Casts(XCast(x_cast), YCast(y_cast))
    except ValueError:
        raise InvalidInput(
            f"unknown cast: x_cast must be one of {[c.value for c in XCast]}, "
            f"y_cast one of {[c.value for c in YCast]}"
        ) from None
    check_retention(retention_days, retention_points)
    if len(description) > 2000:
        raise InvalidInput("description is longer than 2000 characters", field="description")
    try:
        with Feed._meta.database.atomic():
            return Feed.create(
                name=name,
                owner=owner,
                x_cast=casts.x.value,
                y_cast=casts.y.value,
                description=description,
                public=public,
                retention_days=retention_days,
                retention_points=retention_points,
            )
    except pw.IntegrityError:
        raise Conflict(f"a feed named {name!r} already exists", field="name") from None


def check_retention(days: float | None, points: int | None) -> None:
    if days is not None and not 0 < days <= 36500:
        raise InvalidInput("retention days must be between 0 and 36500", field="retention_days")
    if points is not None and not 1 <= points <= 10**10:
        raise InvalidInput("retention points must be between 1 and 10000000000", field="retention_points")


def check_axis_quota(feed: Feed, quota: int, adding: int = 1) -> None:
    """Raise AxisQuotaExceeded if `feed` may not get `adding` more axes within `quota` (0: no limit)."""
    if quota <= 0:
        return
    count = Axis.select(Axis.id).where(Axis.feed == feed.id).count()
    if count + adding > quota:
        raise AxisQuotaExceeded(
            f"axis quota reached: feed {feed.name!r} has {count} axes and may have {quota}; delete an axis first",
            quota=quota,
        )


def create_axis(feed: Feed, name: str, *, quota: int = 0) -> Axis:
    """A new axis; `quota` is the most axes the feed may have (0: no limit, as for `rtdp axis add`)."""
    try:
        return _insert_axis(feed, name, quota)
    except pw.IntegrityError:
        raise Conflict(f"feed {feed.name!r} already has an axis named {name!r}", field="name") from None


def ensure_axis(feed: Feed, name: str, *, quota: int = 0) -> Axis:
    """The axis, created if missing (within `quota` axes per feed, 0: no limit); safe when two writers
    race to create it."""
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == name))
    if axis is not None:
        return axis
    try:
        return _insert_axis(feed, name, quota)
    except pw.IntegrityError:
        return get_axis(feed, name)


def _insert_axis(feed: Feed, name: str, quota: int) -> Axis:
    check_name(name, "axis")
    check_axis_quota(feed, quota)
    with Axis._meta.database.atomic():
        axis: Axis = Axis.create(feed=feed, name=name)
        return axis

