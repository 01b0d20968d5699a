"""The subscription index: which topic filters match a topic, remembered per topic.

amqtt keeps subscriptions as one dict, topic filter -> [(session, granted QoS)], and for every message
it tested the topic against every filter in that dict (splitting both into levels each time). Here
that dict is a `Subscriptions`, a dict that notices when a filter is added or removed: the filters a
topic matches are worked out once (with amqtt's own `_matches`, so the rules are amqtt's: `$` topics
are not matched by a filter starting with a wildcard) and kept until the set of filters changes. A
device publishing to a handful of topics costs one dict lookup per message, however many filters exist.

The lists of (session, QoS) are amqtt's, changed in place by amqtt (append, pop), and read at each
message, so a session added to or removed from an existing filter is seen at once. Each is kept as a
`Holders` list that counts its changes in the index's `generation`, with every change of the set of
filters: broker.fastpath keeps a topic's subscribers for as long as the generation stays the same. Memory
is bounded: at `MAX_TOPICS` remembered topics the memory is cleared and refilled as messages come.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Self, SupportsIndex

# Topics whose matching filters are remembered at once (each entry: the topic and a short list).
MAX_TOPICS = 4096


class Holders(list[tuple[Any, int]]):
    """One filter's [(session, QoS)], counting every change in its index's `generation`."""

    __slots__ = ("_index",)

    def __init__(self, index: Subscriptions, items: Iterable[tuple[Any, int]] = ()) -> None:
        super().__init__(items)
        self._index = index

    def _changed(self) -> None:
        self._index.generation += 1

    def append(self, item: tuple[Any, int]) -> None:
        super().append(item)
        self._changed()

    def extend(self, items: Iterable[tuple[Any, int]]) -> None:
        super().extend(items)
        self._changed()

    def insert(self, index: SupportsIndex, item: tuple[Any, int]) -> None:
        super().insert(index, item)
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> tuple[Any, int]:
        item = super().pop(index)
        self._changed()
        return item

    def remove(self, item: tuple[Any, int]) -> None:
        super().remove(item)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, items: Iterable[tuple[Any, int]]) -> Self:  # type: ignore[override,misc]
        self.extend(items)
        return self


class Subscriptions(dict[str, list[tuple[Any, int]]]):
    """amqtt's `Broker._subscriptions` (topic filter -> [(session, QoS)]) with `matching(topic)`.

    Every change of the set of filters goes through `__setitem__`, `__delitem__`, `pop` or `clear` (amqtt
    uses those); each forgets what was remembered. Every list put in is kept as `Holders`; `generation`
    changes with any change to the filters or their lists."""

    def __init__(self, matches: Callable[[str, str], bool]) -> None:
        super().__init__()
        self._matches = matches
        self._matching: dict[str, tuple[str, ...]] = {}
        self.generation = 0

    def matching(self, topic: str) -> tuple[str, ...]:
        """The filters that match `topic` (some may have no session left: their lists can be empty)."""
        found = self._matching.get(topic)
        if found is None:
            found = tuple(f for f in self if self._matches(topic, f))
            if len(self._matching) >= MAX_TOPICS:
                self._matching.clear()
            self._matching[topic] = found
        return found

    def _changed(self) -> None:
        self._matching.clear()
        self.generation += 1

    def __setitem__(self, key: str, value: list[tuple[Any, int]]) -> None:
        if key not in self:
            self._matching.clear()
        self.generation += 1
        super().__setitem__(key, value if isinstance(value, Holders) else Holders(self, value))

    def __delitem__(self, key: str) -> None:
        self._changed()
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._changed()
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default if default is not None else []
        return self[key]

    def clear(self) -> None:
        self._changed()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value
