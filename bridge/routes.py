"""From a message's topic to the axis its points go to: parsed, looked up and cached.

Per message the hot path is one dict lookup. Entries expire (`ttl`) so a feed whose casts changed
or that was deleted is seen again; the writer also clears everything after a failed commit (a
foreign-key error means a cached axis is gone). Unknown feeds are remembered briefly too, so a
device publishing to a feed that does not exist costs one query per `miss_ttl`, not per message.

Auto-create. A missing axis of an existing feed is created once a message for it decoded. A missing
feed only for a message that names its creator: the embedded broker's intake passes the publisher's
user id when its ACL let the publish create the feed (broker.access). The feed is then created, owned
by that user and within their feed quota, once the message decoded, so a bad payload leaves no empty
feed. If the feed exists by then (made by someone else in between), the creator must be allowed to
write to it. A subscribing bridge (`rtdp bridge`, behind Mosquitto or `rtdp broker`) never learns who
published, so there an unknown feed is rejected (`unknown_feed`): create it first (web, API or CLI).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bridge.errors import Rejected
from rtdp import store
from rtdp.accounts import principal_for
from rtdp.casts import YCast
from rtdp.codec import Casts
from rtdp.errors import Conflict, InvalidInput, PermissionDenied
from rtdp.models import Axis, Feed, User
from rtdp.permissions import Access, allowed, check_feed_quota
from rtdp.topic import ERRORS_PREFIX, NAME_RE, FeedTopic

log = logging.getLogger("rtdp.bridge")

# Errors about topics that name no valid feed go here: '~' is not a name character, so no feed's
# owner is ever shown them (rtdp.topic.feed_of_filter gives None); admins see them on rtdp/errors/#.
NO_NAME = "~"

# What a feed created on first publish gets: the model's defaults.
NEW_FEED_CASTS = store.feed_casts(Feed())


@dataclass(frozen=True, slots=True)
class Route:
    feed: str
    axis: str
    axis_id: int | None  # None: the axis does not exist yet (see Routes.with_axis)
    casts: Casts
    owner_id: int | None = None  # None: the feed does not exist yet (its creator makes it, see with_axis)

    @property
    def y_cast(self) -> YCast:
        return self.casts.y


def errors_topic_for(topic: str) -> tuple[str, str, str]:
    """(errors topic, feed, axis) for any incoming topic, valid or not."""
    parts = topic.split("/")
    feed = parts[1] if len(parts) >= 2 and NAME_RE.fullmatch(parts[1]) else NO_NAME
    axis = parts[2] if len(parts) == 3 and feed != NO_NAME and NAME_RE.fullmatch(parts[2]) else NO_NAME
    return f"{ERRORS_PREFIX}/{feed}/{axis}", feed, axis


class Routes:
    """Topic -> Route cache. Used by the writer thread only (not thread-safe)."""

    def __init__(
        self,
        ttl: float = 30.0,
        miss_ttl: float = 1.0,
        max_entries: int = 100_000,
        *,
        feed_quota: int = 0,
        axis_quota: int = 0,
    ) -> None:
        self.ttl = ttl
        self.feed_quota = feed_quota  # feeds a non-admin creator may own (0: no limit)
        self.axis_quota = axis_quota  # axes a feed may have (0: no limit)
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._routes: dict[str, tuple[float, Route]] = {}
        self._feeds: dict[str, tuple[float, Feed | None]] = {}

    def clear(self) -> None:
        self._routes.clear()
        self._feeds.clear()

    def resolve(self, topic: str, creator: int | None = None) -> Route:
        """The route for `topic`; raises Rejected for bad topics, unknown feeds (unless `creator` may make
        it: then the route has no owner yet) and a creator who may not write to the feed, and peewee errors
        when the database is unavailable (the caller retries)."""
        now = time.monotonic()
        entry = self._routes.get(topic)
        if entry is not None and entry[0] > now:
            route = entry[1]
            if creator is not None and creator != route.owner_id:
                self._check_creator(route.feed, creator, now)
            return route
        try:
            parsed = FeedTopic.parse(topic)
        except InvalidInput as exc:
            raise Rejected("bad_topic", exc.message) from None
        feed = self._feed(parsed.feed, now)
        if feed is None:
            if creator is not None:
                return Route(parsed.feed, parsed.axis, None, NEW_FEED_CASTS)
            raise Rejected(
                "unknown_feed",
                f"no feed named {parsed.feed!r}: create it first (the bridge creates feeds only for publishers "
                "it knows, through the embedded broker of rtdp serve)",
            )
        if creator is not None and creator != feed.owner_id:
            self._check_creator(parsed.feed, creator, now)
        axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == parsed.axis))
        route = Route(
            parsed.feed, parsed.axis, axis.id if axis is not None else None, store.feed_casts(feed), feed.owner_id
        )
        if axis is not None:
            self._remember(topic, route, now)
        return route

    def with_axis(self, topic: str, route: Route, creator: int | None = None) -> Route:
        """`route` with its axis (and feed), created now: called only once a message for it decoded, so a
        bad message to a new name leaves no empty axis or feed behind."""
        if route.axis_id is not None:
            return route
        if route.owner_id is None:
            if creator is None:
                raise Rejected("unknown_feed", f"no feed named {route.feed!r}")
            feed = self._create_feed(route.feed, creator)
            if store.feed_casts(feed) != route.casts:
                # Decoded for a new feed's default casts; someone made the feed with others meanwhile.
                raise Rejected(
                    "feed_changed", f"feed {route.feed!r} was just created with other casts: publish again"
                )
        else:
            entry = self._feeds.get(route.feed)
            if entry is None or entry[1] is None:
                raise Rejected("unknown_feed", f"no feed named {route.feed!r}")
            feed = entry[1]
        try:
            axis = store.ensure_axis(feed, route.axis, quota=self.axis_quota)
        except PermissionDenied as exc:  # the axis quota
            raise Rejected(exc.code, exc.message, **exc.detail) from None
        created = Route(route.feed, route.axis, axis.id, route.casts, feed.owner_id)
        self._remember(topic, created, time.monotonic())
        return created

    def _create_feed(self, name: str, creator: int) -> Feed:
        feed = Feed.get_or_none(Feed.name == name)
        if feed is None:
            try:
                check_feed_quota(creator, self.feed_quota)
                feed = store.create_feed(name, creator)
                log.info("feed %r created on first publish by user %d", name, creator)
            except PermissionDenied as exc:  # the quota, or a user deleted meanwhile
                raise Rejected(exc.code, exc.message, **exc.detail) from None
            except Conflict:
                feed = store.get_feed(name)  # created by someone else in between
        self._feeds[name] = (time.monotonic() + self.ttl, feed)
        if feed.owner_id != creator:
            self._check_creator(name, creator, time.monotonic())
        return feed

    def _check_creator(self, name: str, creator: int, now: float) -> None:
        """The publish was let through to create feed `name`, which exists now: its owner is somebody
        else, so the creator needs write access like any publisher. Rare: only for messages that may
        create a feed, while that feed comes into being."""
        feed = self._feed(name, now)
        user = User.get_or_none(User.id == creator)
        if feed is None or user is None or not allowed(principal_for(user), feed, Access.WRITE):
            raise Rejected("forbidden", f"feed {name!r} belongs to someone else: you may not write to it")

    def _remember(self, topic: str, route: Route, now: float) -> None:
        if len(self._routes) >= self.max_entries:
            self._routes.clear()
        self._routes[topic] = (now + self.ttl, route)

    def _feed(self, name: str, now: float) -> Feed | None:
        entry = self._feeds.get(name)
        if entry is not None and entry[0] > now:
            return entry[1]
        feed = Feed.get_or_none(Feed.name == name)
        if len(self._feeds) >= self.max_entries:
            self._feeds.clear()
        self._feeds[name] = (now + (self.ttl if feed is not None else self.miss_ttl), feed)
        return feed
