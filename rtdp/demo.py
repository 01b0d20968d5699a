"""The original app's demo data: two users, their feeds and a few points, dated to end today."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from rtdp.accounts import create_user
from rtdp.codec import Sample
from rtdp.models import User
from rtdp.store import create_axis, create_feed, write_points

DEMO_PASSWORD = "1234"

_FEEDS: list[tuple[str, str, str, dict[str, list[float]]]] = [
    ("ep@nothing.com", "manual_feed_a", "int", {"axis_a00": [0, 2, 7, 3, 2]}),
    ("ep@nothing.com", "manual_feed_b", "int", {"axis_b00": [40, 72, 31, 73, 72, 82, 32]}),
    (
        "ep@nothing.com",
        "sin_wave_over_time_in_seconds",
        "float",
        {"axis_at_0_degrees": [], "axis_at_45_degrees": [], "axis_at_90_degrees": []},
    ),
    ("ap@nothing.com", "manual_feed_aj", "int", {"axis_aj_00": [1, 3, 2, 4, 3], "axis_aj_01": [9, 8, 7, 6, 5]}),
]


DEMO_EMAILS = tuple(sorted({email for email, *_ in _FEEDS}))


def seed_demo(now: float | None = None) -> bool:
    """Create the demo data if the database has no users. Returns whether it did."""
    if User.select().exists():
        return False
    users = {
        email: create_user(email, DEMO_PASSWORD, admin=email.startswith("ep@"))
        for email in ("ep@nothing.com", "ap@nothing.com")
    }
    today = datetime.fromtimestamp(now if now is not None else time.time(), UTC).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    for owner, feed_name, y_cast, axes in _FEEDS:
        feed = create_feed(feed_name, users[owner], y_cast=y_cast, description="demo feed from the original app")
        for axis_name, values in axes.items():
            axis = create_axis(feed, axis_name)
            # Consecutive days ending today, as the original's 2014 points were consecutive days.
            start = today - timedelta(days=len(values) - 1)
            write_points(
                [(axis.id, Sample((start + timedelta(days=i)).timestamp(), float(v))) for i, v in enumerate(values)]
            )
    return True
