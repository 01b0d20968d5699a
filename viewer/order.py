"""Stored notices in commit order: what the hub fans out of a feed follows the order its points were committed.

Several bridges (a share group) each publish a notice after their commit, and two notices of one feed can
reach this viewer in the other order. An SSE client shown the later one first and cut before the earlier one
arrives would resume after the later id and never get the earlier point. Each notice says which of the feed's
heads it follows (`after`, rtdp.notices; the store moves a feed's head in commit order, rtdp.store.write), so
a notice that does not follow the last one passed on waits here, briefly, for the one missing. Should that
never come (its bridge died between its commit and its notice), the missing points are read from the
database, where they are committed already: a notice exists only after its commit, and the feed's commits
follow each other. Notices whose points were passed on already (read from the database, or a redelivery)
pass on nothing twice.

Runs on the event loop (viewer.publisher calls `dispatch` there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rtdp.notices import StoredEvent

log = logging.getLogger(__name__)

# Seconds a notice waits for the one before it; notices of two bridges are usually milliseconds apart.
HOLD = 0.5
# Notices held for one feed beyond which the missing points are read from the database at once.
HELD_MAX = 1000

# (feed, after id, at most this many) -> the feed's points with id > after, in id order (rtdp.store.points_after).
Fetch = Callable[[str, int, int], Awaitable[list[StoredEvent]]]
PAGE = 5000


@dataclass
class _Feed:
    # The newest point id passed on; None until a notice says where the feed is.
    head: int | None = None
    # Notices that do not follow `head` yet: (after, events), in arrival order.
    held: list[tuple[int, list[StoredEvent]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    fetching: bool = False


@dataclass
class InOrder:
    """Passes each feed's stored notices on to `deliver` (the hub) in the order their points were committed."""

    deliver: Callable[[str, list[StoredEvent]], None]
    fetch: Fetch
    # Whether any stream listens to the feed (the hub's): a feed nobody watches forgets where it was.
    watched: Callable[[str], bool]
    hold: float = HOLD
    _feeds: dict[str, _Feed] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def watch(self, feed: str, head: int | None) -> None:
        """A stream is about to subscribe to `feed`, whose newest point was `head` just before. The first
        stream of a feed sets where it stands: anything committed after `head` is passed on in order, also
        a commit whose notice came while nobody watched (it is read from the database)."""
        if feed not in self._feeds:
            self._feeds[feed] = _Feed(head=head)

    def is_watched(self, feed: str) -> bool:
        """viewer.publisher's filter: notices of unwatched feeds are not even parsed, so their place is forgotten."""
        if self.watched(feed):
            return True
        state = self._feeds.pop(feed, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()
        return False

    def dispatch(self, feed: str, events: list[StoredEvent], after: int | None = None) -> None:
        if not events:
            return
        state = self._feeds.setdefault(feed, _Feed())
        if state.fetching or (after is not None and state.head is not None and after > state.head):
            self._hold(feed, state, after if after is not None else state.head or 0, events)
            return
        self._pass(feed, state, events, known=after is not None)
        self._release(feed, state)

    def _pass(self, feed: str, state: _Feed, events: list[StoredEvent], *, known: bool = True) -> None:
        """Deliver what is newer than the head. A notice that does not say what it follows (`known`
        False: a bridge from before heads were kept) is passed on whole, as it always was."""
        head = state.head
        if known and head is not None and events[0].id <= head:
            events = [event for event in events if event.id > head]  # passed on already
            if not events:
                return
        state.head = max(events[-1].id, head or 0)
        self.deliver(feed, events)

    def _hold(self, feed: str, state: _Feed, after: int, events: list[StoredEvent]) -> None:
        state.held.append((after, events))
        if len(state.held) > HELD_MAX:
            self._catch_up(feed, state)
        elif state.timer is None and not state.fetching:
            loop = asyncio.get_running_loop()
            state.timer = loop.call_later(self.hold, self._catch_up, feed, state)

    def _release(self, feed: str, state: _Feed) -> None:
        """Pass on the held notices that follow the head now, and any that became stale."""
        while state.held and not state.fetching:
            for index, (after, events) in enumerate(state.held):
                if state.head is None or after <= state.head:
                    del state.held[index]
                    self._pass(feed, state, events)
                    break
            else:
                return
        if not state.held and state.timer is not None:
            state.timer.cancel()
            state.timer = None

    def _catch_up(self, feed: str, state: _Feed) -> None:
        """The notice the held ones wait for did not come: read what is missing from the database."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.fetching or self._feeds.get(feed) is not state:
            return
        state.fetching = True
        task = asyncio.get_running_loop().create_task(self._fetch(feed, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, feed: str, state: _Feed) -> None:
        try:
            while state.head is not None and self.watched(feed):
                rows = await self.fetch(feed, state.head, PAGE)
                if rows:
                    self._pass(feed, state, rows)
                if len(rows) < PAGE:
                    break
        except Exception:  # noqa: BLE001 -- the database may be down: pass the held notices on as they are
            log.warning("could not read the missing points of feed %s; passing later ones on", feed, exc_info=True)
            state.held.sort(key=lambda held: held[0])
            state.head = None
        finally:
            state.fetching = False
        self._release(feed, state)
        if state.held and state.timer is None:
            state.timer = asyncio.get_running_loop().call_later(self.hold, self._catch_up, feed, state)

    def close(self) -> None:
        for state in self._feeds.values():
            if state.timer is not None:
                state.timer.cancel()
        self._feeds.clear()
        for task in self._tasks:
            task.cancel()
