"""viewer.order.InOrder: a feed's stored notices passed on in commit order, whatever order they came in."""

from __future__ import annotations

import asyncio

import peewee as pw

from rtdp.codec import Sample
from rtdp.models import User
from rtdp.notices import StoredEvent
from rtdp.store import Written, create_axis, create_feed, feed_head, points_after_named, write_points
from viewer.order import InOrder


def events(written: Written) -> list[StoredEvent]:
    return [StoredEvent(p.id, "a", p.x, p.y) for p in written]


def test_notices_are_passed_on_in_commit_order(sqlite_db: pw.Database) -> None:
    """Out of order: held until the missing one comes. A redelivered or stale notice passes nothing twice.
    One that never comes: after `hold` seconds the missing points are read from the database."""
    owner = User.create(email="o@nothing.com", password_hash="unused")
    axis = create_axis(create_feed("f", owner), "a")
    start = write_points([(axis.id, Sample(0.0, 0.0))])

    async def scenario() -> list[int]:
        passed: list[int] = []

        async def fetch(feed: str, after: int, limit: int) -> list[StoredEvent]:
            return [StoredEvent(*row) for row in points_after_named(feed, after, limit)]

        order = InOrder(lambda feed, got: passed.extend(e.id for e in got), fetch, lambda feed: True, hold=0.2)
        order.watch("f", feed_head(axis.feed))
        one, two, three = (write_points([(axis.id, Sample(float(i), float(i)))]) for i in (1, 2, 3))
        order.dispatch("f", events(two), two.follows[axis.id])
        order.dispatch("f", events(three), three.follows[axis.id])
        assert passed == []  # waiting for `one`
        order.dispatch("f", events(one), one.follows[axis.id])
        assert passed == [one[0].id, two[0].id, three[0].id]
        order.dispatch("f", events(two), two.follows[axis.id])  # a redelivery
        assert passed == [one[0].id, two[0].id, three[0].id]
        lost = write_points([(axis.id, Sample(4.0, 4.0)), (axis.id, Sample(5.0, 5.0))])  # its notice never comes
        last = write_points([(axis.id, Sample(6.0, 6.0))])
        order.dispatch("f", events(last), last.follows[axis.id])
        assert passed[-1] == three[0].id
        await asyncio.sleep(0.5)
        assert passed[-3:] == [*(p.id for p in lost), last[0].id]
        order.close()
        return passed

    passed = asyncio.run(scenario())
    assert start[0].id not in passed
    assert passed == [row[0] for row in points_after_named("f", start[0].id)]
