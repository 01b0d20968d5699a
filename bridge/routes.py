"""From a message's topic to the place its points go: parsed, resolved by the catalog and cached.

Per message the hot path is one dict lookup. Entries expire (`ttl`) so a feed whose casts changed
or that was deleted is seen again; the writer also clears everything after a failed commit (a
foreign-key error means a cached axis is gone). Feed rows are cached for the catalog too, unknown feeds
briefly (`miss_ttl`), so a device publishing to a feed that does not exist costs one query per
`miss_ttl`, not per message.

Who writes. A message names no principal: the broker's ACL let it through, so it may write to any
existing feed, as the service account does (rtdp.catalog: which creates no feeds). The embedded
broker's intake also passes the publisher's user id when its ACL let the publish create the feed
(broker.access): that user is then the writer, and the catalog creates the feed for them, within their
feed quota, once the message decoded, so a bad payload leaves no empty feed. A subscribing bridge
(`rtdp bridge`, behind Mosquitto or `rtdp broker`) never learns who published, so there an unknown
feed is rejected (`unknown_feed`): create it first (web, API or CLI).
"""

from __future__ import annotations

import time

from bridge.errors import Rejected
from rtdp import catalog
from rtdp.accounts import principal_for
from rtdp.errors import InvalidInput, RtdpError
from rtdp.models import Feed, User
from rtdp.permissions import Principal
from rtdp.topic import ERRORS_PREFIX, NAME_RE, FeedTopic

# Errors about topics that name no valid feed go here: '~' is not a name character, so no feed's
# owner is ever shown them (rtdp.topic.feed_of_filter gives None); admins see them on rtdp/errors/#.
NO_NAME = "~"

# The writer of a message without a creator (see the module docstring).
PASSED_ON = Principal(user_id=0, email="", is_admin=True, service=True)

# What the writer keeps per topic: the catalog's answer.
Route = catalog.Target


def errors_topic_for(topic: str) -> tuple[str, str, str]:
    """(errors topic, feed, axis) for any incoming topic, valid or not."""
    parts = topic.split("/")
    feed = parts[1] if len(parts) >= 2 and NAME_RE.fullmatch(parts[1]) else NO_NAME
    axis = parts[2] if len(parts) == 3 and feed != NO_NAME and NAME_RE.fullmatch(parts[2]) else NO_NAME
    return f"{ERRORS_PREFIX}/{feed}/{axis}", feed, axis


class Routes:
    """Topic -> Route cache over rtdp.catalog. Used by the writer thread only (not thread-safe)."""

    def __init__(
        self,
        policy: catalog.Policy,
        ttl: float = 30.0,
        miss_ttl: float = 1.0,
        max_entries: int = 100_000,
    ) -> None:
        self.policy = policy
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._routes: dict[str, tuple[float, Route]] = {}
        self._feeds: dict[str, tuple[float, Feed | None]] = {}
        self._creators: dict[int, tuple[float, Principal | None]] = {}

    def clear(self) -> None:
        self._routes.clear()
        self._feeds.clear()
        self._creators.clear()

    def resolve(self, topic: str, creator: int | None = None) -> Route:
        """The route for `topic` (`pending` when its feed or axis is still to be created, see `with_axis`);
        raises Rejected for bad topics and what the catalog refuses, and peewee errors when the database
        is unavailable (the caller retries)."""
        now = time.monotonic()
        entry = self._routes.get(topic)
        if entry is not None and entry[0] > now and (creator is None or creator == entry[1].owner_id):
            return entry[1]
        try:
            parsed = FeedTopic.parse(topic)
        except InvalidInput as exc:
            raise Rejected("bad_topic", exc.message) from None
        route = self._resolve(parsed.feed, parsed.axis, creator, create=False)
        if not route.pending:
            self._remember(topic, route, now)
        return route

    def with_axis(self, topic: str, route: Route, creator: int | None = None) -> Route:
        """`route` with its axis (and feed), created now: called only once a message for it decoded, so a
        bad message to a new name leaves no empty axis or feed behind."""
        if not route.pending:
            return route
        created = self._resolve(route.feed, route.axis, creator, create=True)
        if route.feed_id is None:
            self._feeds.pop(route.feed, None)  # remembered as missing until now
        if created.casts != route.casts:
            # Decoded for a new feed's default casts; someone made the feed with others meanwhile.
            raise Rejected("feed_changed", f"feed {route.feed!r} was just created with other casts: publish again")
        self._remember(topic, created, time.monotonic())
        return created

    def _resolve(self, feed: str, axis: str, creator: int | None, *, create: bool) -> Route:
        try:
            return catalog.resolve(
                self._writer(creator), feed, axis, self.policy, create=create, lookup=self._feed
            )
        except RtdpError as exc:
            # The notice's topic names the feed and axis already.
            detail = {key: value for key, value in exc.detail.items() if key not in ("feed", "axis")}
            raise Rejected(exc.code, exc.message, **detail) from None

    def _writer(self, creator: int | None) -> Principal:
        if creator is None:
            return PASSED_ON
        now = time.monotonic()
        entry = self._creators.get(creator)
        if entry is None or entry[0] <= now:
            user = User.get_or_none(User.id == creator)
            entry = (now + self.ttl, principal_for(user) if user is not None else None)
            self._creators[creator] = entry
        if entry[1] is None:
            raise Rejected("forbidden", "unknown user: no feed created")
        return entry[1]

    def _remember(self, topic: str, route: Route, now: float) -> None:
        if len(self._routes) >= self.max_entries:
            self._routes.clear()
        self._routes[topic] = (now + self.ttl, route)

    def _feed(self, name: str) -> Feed | None:
        now = time.monotonic()
        entry = self._feeds.get(name)
        if entry is not None and entry[0] > now:
            return entry[1]
        feed = catalog.find_feed_row(name)
        if len(self._feeds) >= self.max_entries:
            self._feeds.clear()
        self._feeds[name] = (now + (self.ttl if feed is not None else self.miss_ttl), feed)
        return feed
