"""From a message's topic to the axis its points go to: parsed, looked up and cached.

Per message the hot path is one dict lookup. Entries expire (`ttl`) so a feed whose casts changed
or that was deleted is seen again; the writer also clears everything after a failed commit (a
foreign-key error means a cached axis is gone). Unknown feeds are remembered briefly too, so a
device publishing to a feed that does not exist costs one query per `miss_ttl`, not per message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.errors import Rejected
from rtdp import store
from rtdp.casts import YCast
from rtdp.codec import Casts
from rtdp.errors import InvalidInput
from rtdp.models import Axis, Feed
from rtdp.topic import ERRORS_PREFIX, NAME_RE, FeedTopic

# Errors about topics that name no valid feed go here: '~' is not a name character, so no feed's
# owner is ever shown them (rtdp.topic.feed_of_filter gives None); admins see them on rtdp/errors/#.
NO_NAME = "~"


@dataclass(frozen=True, slots=True)
class Route:
    feed: str
    axis: str
    axis_id: int | None  # None: the axis does not exist yet (see Routes.with_axis)
    casts: Casts

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

    def __init__(self, ttl: float = 30.0, miss_ttl: float = 1.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._routes: dict[str, tuple[float, Route]] = {}
        self._feeds: dict[str, tuple[float, Feed | None]] = {}

    def clear(self) -> None:
        self._routes.clear()
        self._feeds.clear()

    def resolve(self, topic: str) -> Route:
        """The route for `topic`; raises Rejected for bad topics and unknown feeds, and peewee errors
        when the database is unavailable (the caller retries)."""
        now = time.monotonic()
        entry = self._routes.get(topic)
        if entry is not None and entry[0] > now:
            return entry[1]
        try:
            parsed = FeedTopic.parse(topic)
        except InvalidInput as exc:
            raise Rejected("bad_topic", exc.message) from None
        feed = self._feed(parsed.feed, now)
        if feed is None:
            raise Rejected(
                "unknown_feed",
                f"no feed named {parsed.feed!r}: create it first (behind an external broker the bridge "
                "creates only axes of existing feeds)",
            )
        axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == parsed.axis))
        route = Route(parsed.feed, parsed.axis, axis.id if axis is not None else None, store.feed_casts(feed))
        if axis is not None:
            self._remember(topic, route, now)
        return route

    def with_axis(self, topic: str, route: Route) -> Route:
        """`route` with its axis, created now: called only once a message for it decoded, so a bad
        message to a new axis name leaves no empty axis behind."""
        if route.axis_id is not None:
            return route
        feed = self._feeds.get(route.feed)
        if feed is None or feed[1] is None:
            raise Rejected("unknown_feed", f"no feed named {route.feed!r}")
        axis = store.ensure_axis(feed[1], route.axis)
        created = Route(route.feed, route.axis, axis.id, route.casts)
        self._remember(topic, created, time.monotonic())
        return created

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
