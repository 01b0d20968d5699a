"""Data pages: one axis's points (live table, history pages), the live graph and the sparklines.

The graph and sparklines pages only carry the feed's description; the browser loads history from
the points API and live points from the feed's SSE stream (see static/js/).
"""

from __future__ import annotations

import json

import peewee as pw
from starlette.responses import Response

from rtdp.errors import InvalidInput
from rtdp.models import Axis, Feed, Point
from rtdp.store import get_axis, query_points
from viewer.pages.render import STATIC, Ctx

PAGE_SIZE = 50


def resume_id() -> int:
    """The highest point id now: the stream resumes from here, so nothing stored after this page
    was rendered can be missed, even if the first connection is dropped before its first event.
    (MAX of the primary key: an index lookup, never a count.)"""
    value = Point.select(pw.fn.MAX(Point.id)).scalar()
    return int(value or 0)


def series_config(feed: Feed, axis: Axis) -> dict[str, object]:
    """One series of a chart as static/js/chart.js takes it."""
    last = None if axis.last_x is None else {"x": axis.last_x, "y": axis.last_y}
    return {"feed": feed.name, "axis": axis.name, "label": axis.label or axis.name, "unit": axis.unit or "",
            "y_cast": feed.y_cast, "last": last}


def _feed_config(ctx: Ctx, feed_name: str) -> tuple[object, list[Axis], str]:
    feed = ctx.feed(feed_name)
    axes = list(Axis.select().where(Axis.feed == feed.id).order_by(Axis.name))
    config = {
        "feed": feed.name,
        "x_cast": feed.x_cast,
        "y_cast": feed.y_cast,
        "axes": [axis.name for axis in axes],
        "series": [series_config(feed, axis) for axis in axes],
        "api": f"/api/v1/feeds/{feed.name}",
        "resume": resume_id(),
    }
    # Goes into a <script type="application/json"> element: escape "<" so no "</script>" closes it.
    return feed, axes, json.dumps(config).replace("<", "\\u003c")


def axis_page(ctx: Ctx) -> Response:
    feed = ctx.feed(ctx.request.path_params["feed"])
    axis = get_axis(feed, ctx.request.path_params["axis"])
    before_text = ctx.request.query_params.get("before")
    before: float | None = None
    if before_text:
        try:
            before = float(before_text)
        except ValueError:
            raise InvalidInput("before must be a number (an x value)") from None
    resume = resume_id()  # before the query: a point stored in between is in one or the other
    rows = query_points(axis, until=before, limit=PAGE_SIZE + 2, newest=True)
    if before is not None:
        rows = [row for row in rows if row[1] < before]
    older = len(rows) > PAGE_SIZE
    # Newest first, each with its trend against the point before it (compared as numbers); the
    # extra row fetched gives the oldest shown row its trend too.
    points = []
    for index in range(len(rows) - 1, max(len(rows) - PAGE_SIZE, 0) - 1, -1):
        point_id, x, y = rows[index]
        trend = ""
        if index > 0:
            previous = rows[index - 1][2]
            trend = "up" if y > previous else "down" if y < previous else "equal"
        points.append({"id": point_id, "x": x, "y": y, "trend": trend})
    config = json.dumps(
        {
            "feed": feed.name,
            "axis": axis.name,
            "x_cast": feed.x_cast,
            "y_cast": feed.y_cast,
            "unit": axis.unit or "",
            "page": PAGE_SIZE,
            "resume": resume,
        }
    ).replace("<", "\\u003c")
    return ctx.render(
        "axis.html",
        feed=feed,
        axis=axis,
        points=points,
        live=before is None,
        older=points[-1]["x"] if older and points else None,
        config=config,
    )


def _vendor_ready() -> bool:
    return (STATIC / "vendor" / "uPlot.iife.min.js").is_file()


def graph_page(ctx: Ctx) -> Response:
    feed, axes, config = _feed_config(ctx, ctx.request.path_params["feed"])
    return ctx.render("graph.html", feed=feed, axes=axes, config=config, vendor_ready=_vendor_ready())


def sparklines_page(ctx: Ctx) -> Response:
    feed, axes, config = _feed_config(ctx, ctx.request.path_params["feed"])
    return ctx.render("sparklines.html", feed=feed, axes=axes, config=config)
