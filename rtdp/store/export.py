"""Exporting a feed's points, streamed. Synchronous (Peewee): call it from a thread, never from an
event loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rtdp.models import Axis, Feed, Point


def iter_export(
    feed: Feed, axes: Sequence[Axis], since: float | None, until: float | None
) -> Iterator[tuple[str, float, float]]:
    """(axis name, x, y) ordered by axis then x, streamed without loading everything."""
    for axis in axes:
        query: Any = Point.select(Point.x, Point.y).where(Point.axis == axis.id)
        if since is not None:
            query = query.where(Point.x >= since)
        if until is not None:
            query = query.where(Point.x <= until)
        for x, y in query.order_by(Point.x).tuples().iterator():
            yield axis.name, x, y

