"""Dashboard pages: `/dashboards` (mine and shared with me, create one) and `/dashboards/<id>` (the widgets,
live; editing and sharing for whoever may change it, through /api/v1/dashboards). rtdp.dashboards decides
who sees what; the page only carries that answer to static/js/dashboard.js."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from rtdp import dashboards
from rtdp.casts import y_json
from rtdp.errors import AuthenticationFailed, RtdpError
from rtdp.models import Axis, Feed, User
from rtdp.permissions import Principal, readable_feeds
from rtdp.store import feed_casts
from viewer.pages.charts import resume_id
from viewer.pages.render import STATIC, Ctx, LoginRequired, error_field

# Feeds and axes offered in the editor's pickers (the rest can still be named through the API).
PICKER_LIMIT = 500


def _listed(ctx: Ctx, principal: Principal, **context: Any) -> Response:
    boards = dashboards.list_for(principal)
    owners = {u.id: u.email for u in User.select(User.id, User.email).where(User.id.in_({d.owner_id for d in boards}))}
    return ctx.render("dashboards.html", dashboards=boards, owners=owners, user_id=principal.user_id, **context)


def dashboard_list(ctx: Ctx) -> Response:
    return _listed(ctx, ctx.require_principal())


def create_dashboard(ctx: Ctx) -> Response:
    principal = ctx.require_principal()
    try:
        created = dashboards.create(principal, {"name": ctx.form.get("name", "")})
    except RtdpError as exc:
        if ctx.wants_json:
            raise
        return _listed(
            ctx, principal, status=exc.status, error=exc.message, error_field=error_field(exc, ("name",)),
            name=ctx.form.get("name", ""),
        )
    return ctx.redirect(f"/dashboards/{created.id}?edit=1")


def _series_info(ctx: Ctx, widgets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each visible series `feed/axis`: the feed's casts and the axis's latest point."""
    keys = {(s["feed"], s["axis"]) for w in widgets for s in (w.get("series") or [w]) if "feed" in s}
    feeds = {f.name: f for f in Feed.select().where(Feed.name.in_(list({k[0] for k in keys})))}
    info: dict[str, dict[str, Any]] = {}
    for feed_name, axis_name in sorted(keys):
        feed = feeds.get(feed_name)
        if feed is None:
            continue
        casts = feed_casts(feed)
        axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == axis_name))
        info[f"{feed_name}/{axis_name}"] = {
            "feed": feed_name, "axis": axis_name, "x_cast": feed.x_cast, "y_cast": feed.y_cast,
            "unit": (axis.unit or "") if axis is not None else "",
            "label": (axis.label or "") if axis is not None else "",
            "last_x": None if axis is None else axis.last_x,
            "last_y": None if axis is None or axis.last_y is None else y_json(axis.last_y, casts.y),
        }
    return info


def _picker(ctx: Ctx) -> list[dict[str, Any]]:
    """Every feed the editor may read with its axes (what a widget may show)."""
    feeds = list(readable_feeds(ctx.principal).order_by(Feed.name).limit(PICKER_LIMIT))
    axes: dict[int, list[str]] = {}
    for axis in Axis.select(Axis.feed, Axis.name).where(Axis.feed.in_([f.id for f in feeds])).order_by(Axis.name):
        axes.setdefault(axis.feed_id, []).append(axis.name)
    return [{"feed": f.name, "y_cast": f.y_cast, "axes": axes.get(f.id, [])} for f in feeds if axes.get(f.id)]


def dashboard_page(ctx: Ctx) -> Response:
    try:
        dashboard = dashboards.find(ctx.principal, ctx.request.path_params["dashboard"])
    except AuthenticationFailed:
        raise LoginRequired("sign in to see this dashboard") from None
    view = dashboards.as_dict(ctx.principal, dashboard)
    config = {
        "dashboard": view,
        "series": _series_info(ctx, view["widgets"]),
        "resume": resume_id(),
        "feeds": _picker(ctx) if view["editable"] else [],
        "edit": view["editable"] and ctx.request.query_params.get("edit") == "1",
    }
    return ctx.render(
        "dashboard.html",
        dashboard=view,
        # Goes into a <script type="application/json"> element: escape "<" so no "</script>" closes it.
        config=json.dumps(config).replace("<", "\\u003c"),
        vendor_ready=(STATIC / "vendor" / "uPlot.iife.min.js").is_file(),
    )
