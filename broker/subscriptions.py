"""The subscription index: which topic filters match a topic, remembered per topic.

amqtt keeps subscriptions as one dict, topic filter -> [(session, granted QoS)], and for every message
it tested the topic against every filter in that dict (splitting both into levels each time). Here
that dict is a `Subscriptions`, a dict that notices when a filter is added or removed: the filters a
topic matches are worked out once (with amqtt's own `_matches`, so the rules are amqtt's: `$` topics
are not matched by a filter starting with a wildcard) and kept until the set of filters changes. A
device publishing to a handful of topics costs one dict lookup per message, however many filters exist.

The lists of (session, QoS) stay amqtt's and are read at each message, so a session added to or removed
from an existing filter is seen at once. Memory is bounded: at `MAX_TOPICS` remembered topics the
memory is cleared and refilled as messages come.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Topics whose matching filters are remembered at once (each entry: the topic and a short list).
MAX_TOPICS = 4096


class Subscriptions(dict[str, list[tuple[Any, int]]]):
    """amqtt's `Broker._subscriptions` (topic filter -> [(session, QoS)]) with `matching(topic)`.

    Every change of the set of filters goes through `__setitem__`, `__delitem__`, `pop` or `clear` (amqtt
    uses those); each forgets what was remembered."""

    def __init__(self, matches: Callable[[str, str], bool]) -> None:
        super().__init__()
        self._matches = matches
        self._matching: dict[str, tuple[str, ...]] = {}

    def matching(self, topic: str) -> tuple[str, ...]:
        """The filters that match `topic` (some may have no session left: their lists can be empty)."""
        found = self._matching.get(topic)
        if found is None:
            found = tuple(f for f in self if self._matches(topic, f))
            if len(self._matching) >= MAX_TOPICS:
                self._matching.clear()
            self._matching[topic] = found
        return found

    def __setitem__(self, key: str, value: list[tuple[Any, int]]) -> None:
        if key not in self:
            self._matching.clear()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._matching.clear()
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._matching.clear()
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._matching.clear()
        return super().setdefault(key, default)

    def clear(self) -> None:
        self._matching.clear()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._matching.clear()
        super().update(*args, **kwargs)
