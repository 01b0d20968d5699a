"""The store: feeds and axes (feeds), writing points (write), reading them (read: history,
downsampling, replay), exporting them (export), per-block summaries (summary), and what differs
between SQLite and PostgreSQL (dialect). Synchronous (Peewee): call it from a thread, never from an
event loop."""

from __future__ import annotations

from rtdp.store.dialect import INSERT_CHUNK, dialect_of
from rtdp.store.export import iter_export
from rtdp.store.feeds import (
    check_axis_quota,
    check_retention,
    create_axis,
    create_feed,
    ensure_axis,
    feed_casts,
    get_axis,
    get_feed,
)
from rtdp.store.read import MAX_LIMIT, Buckets, feed_head, plan_buckets, points_after, points_after_named, query_points
from rtdp.store.write import StoredPoint, Written, write_points

__all__ = [
    "INSERT_CHUNK",
    "MAX_LIMIT",
    "Buckets",
    "StoredPoint",
    "check_axis_quota",
    "check_retention",
    "create_axis",
    "create_feed",
    "dialect_of",
    "ensure_axis",
    "feed_casts",
    "feed_head",
    "get_axis",
    "get_feed",
    "iter_export",
    "plan_buckets",
    "points_after",
    "points_after_named",
    "query_points",
    "Written",
    "write_points",
]
