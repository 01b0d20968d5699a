"""Server-rendered sparklines: an axis's newest points as the numeric `points` of an SVG polyline.

The feed list and the feed page draw one per axis without JavaScript. Only numbers leave this module
(formatted floats), so the attribute can never carry markup whatever the stored data is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rtdp.models import Axis
from rtdp.store import query_points

SPARK_POINTS = 60
WIDTH = 120.0
HEIGHT = 24.0
PAD = 1.5  # keeps the stroke of the extremes inside the box


def polyline_points(rows: Sequence[tuple[float, float]], width: float = WIDTH, height: float = HEIGHT) -> str:
    """`"x1,y1 x2,y2 ..."` scaling (x, y) pairs into a width x height box (SVG y grows downwards).
    Non-finite values are skipped; fewer than two usable points give "" (nothing to draw)."""
    usable = [(x, y) for x, y in rows if math.isfinite(x) and math.isfinite(y)]
    if len(usable) < 2:
        return ""
    xs = [x for x, _ in usable]
    ys = [y for _, y in usable]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    inner_w = width - 2 * PAD
    inner_h = height - 2 * PAD
    out = []
    for x, y in usable:
        sx = PAD + (inner_w * (x - x0) / (x1 - x0) if x1 > x0 else inner_w / 2)
        # A flat line sits in the middle rather than on an edge.
        sy = PAD + (inner_h * (1 - (y - y0) / (y1 - y0)) if y1 > y0 else inner_h / 2)
        out.append(f"{sx:.1f},{sy:.1f}")
    return " ".join(out)


def sparklines(axes: Iterable[Axis], limit: int = SPARK_POINTS) -> dict[int, str]:
    """Axis id -> polyline points from its newest `limit` points (one index range read per axis with
    points). Synchronous Peewee: call it from a page handler (the thread pool), never on the loop."""
    result: dict[int, str] = {}
    for axis in axes:
        if not axis.point_count and axis.last_seen is None:
            continue
        rows = query_points(axis, limit=limit, newest=True)
        points = polyline_points([(x, y) for _, x, y in rows])
        if points:
            result[axis.id] = points
    return result
