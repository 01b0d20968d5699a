"""Topic grammar: feed and axis names, and the MQTT topics built from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rtdp.errors import InvalidInput

NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
FEEDS_PREFIX = "feeds"
STORED_PREFIX = "rtdp/stored"
ERRORS_PREFIX = "rtdp/errors"
ALERTS_PREFIX = "rtdp/alerts"
# The topics about one feed that whoever may read the feed may subscribe to (`rtdp/<kind>/<feed>[/...]`):
# the embedded broker's ACL (broker.access) and Mosquitto's (rtdp.mosquitto) both follow `reader_topics`.
NOTICE_KINDS = ("stored", "errors", "alerts")
MAX_TOPIC_LENGTH = 256


def check_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a valid feed or axis name, else raise InvalidInput."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or value in (".", ".."):
        shown = value if isinstance(value, str) and len(value) <= 80 else f"{str(value)[:80]}..."
        raise InvalidInput(
            f"invalid {what} {shown!r}: use 1-64 letters, digits, '_', '-' or '.'",
            field=what,
        )
    return value


@dataclass(frozen=True, slots=True)
class FeedTopic:
    """`feeds/<feed>/<axis>`: the only topic devices publish points to."""

    feed: str
    axis: str

    def __post_init__(self) -> None:
        check_name(self.feed, "feed")
        check_name(self.axis, "axis")

    @classmethod
    def parse(cls, topic: str) -> FeedTopic:
        if len(topic) > MAX_TOPIC_LENGTH:
            raise InvalidInput("topic too long", topic=topic[:80])
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != FEEDS_PREFIX:
            raise InvalidInput(
                f"topic {topic[:80]!r} must be exactly feeds/<feed>/<axis>", topic=topic[:80]
            )
        return cls(parts[1], parts[2])

    def __str__(self) -> str:
        return f"{FEEDS_PREFIX}/{self.feed}/{self.axis}"

    @property
    def errors_topic(self) -> str:
        return f"{ERRORS_PREFIX}/{self.feed}/{self.axis}"


def stored_topic(feed: str) -> str:
    return f"{STORED_PREFIX}/{feed}"


def errors_topic(feed: str, axis: str) -> str:
    return f"{ERRORS_PREFIX}/{feed}/{axis}"


def alerts_topic(feed: str) -> str:
    return f"{ALERTS_PREFIX}/{feed}"


def reader_topics(feed: str) -> list[str]:
    """What a reader of `feed` may subscribe to (Mosquitto ACL lines; the embedded broker decides the same
    through `feed_of_filter`)."""
    return [f"{FEEDS_PREFIX}/{feed}/+", stored_topic(feed), errors_topic(feed, "+"), alerts_topic(feed)]


def feed_of_filter(topic_filter: str) -> str | None:
    """The feed a topic or topic filter is about, if it names exactly one (no wildcard there).

    `feeds/F/...`, `rtdp/stored/F`, `rtdp/errors/F/...`, `rtdp/alerts/F` give F; anything else gives None.
    """
    parts = topic_filter.split("/")
    if len(parts) >= 2 and parts[0] == FEEDS_PREFIX:
        feed = parts[1]
    elif len(parts) >= 3 and parts[0] == "rtdp" and parts[1] in NOTICE_KINDS:
        feed = parts[2]
    else:
        return None
    if NAME_RE.fullmatch(feed) is None:
        return None
    return feed
