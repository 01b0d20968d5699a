"""The original app's page URLs (web2py, `/realtime_data_processor/<controller>/<function>/<id>`), sent on
to the pages that replaced them, so old bookmarks and the original README's links keep working.

An id names a feed (feed_axis_list, feed_graph) or an axis (feed_data, feed_sparkline), as it did there.
It is turned into a name only for someone who may read the feed: the original's TODO asked that ap be
refused ep's `feed_data/3`, so ap gets 403, and a visitor who is not signed in is sent to sign in first
(a redirect would show the feed's name).
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

from starlette.responses import Response

from rtdp.errors import NotFound
from rtdp.models import MAX_ID, Axis, Feed
from viewer.pages.render import Ctx

M = TypeVar("M", Feed, Axis)

PREFIX = "/realtime_data_processor"
# Function -> the page that replaced it: without an id, with a feed id, with an axis id (page under the feed).
PLAIN = {"index": "/", "feed_list": "/", "admin_dashboard": "/admin"}
BY_FEED = {"feed_axis_list": "", "feed_graph": "/graph"}
BY_AXIS = {"feed_data": "/axes/{axis}", "feed_sparkline": "/sparklines"}
# web2py's default/user/<action>.
USER = {"login": "/login", "logout": "/", "register": "/register", "profile": "/account", "change_password": "/account"}


def legacy_page(ctx: Ctx) -> Response:
    params = ctx.request.path_params
    controller, function, arg = params.get("controller", "default"), params.get("function", "index"), params.get("arg")
    if controller == "tools":
        return ctx.redirect("/tools")
    if controller in ("default", "ui"):
        if function in PLAIN and arg is None:
            return ctx.redirect(PLAIN[function])
        if function == "user" and arg in USER:
            return ctx.redirect(USER[arg])
        if function in BY_FEED and arg is not None:
            feed = ctx.feed(_row(Feed, arg).name)
            return ctx.redirect(f"/feeds/{quote(feed.name, safe='')}{BY_FEED[function]}")
        if function in BY_AXIS and arg is not None:
            axis = _row(Axis, arg)
            feed = ctx.feed(axis.feed.name)
            page = BY_AXIS[function].format(axis=quote(axis.name, safe=""))
            return ctx.redirect(f"/feeds/{quote(feed.name, safe='')}{page}")
    raise NotFound(f"no page at {PREFIX}/{controller}/{function}: the original app's pages moved, see /")


def _row(model: type[M], arg: str) -> M:
    """The feed or axis with this id (404 for anything but a plain number of a row)."""
    number = int(arg) if arg.isascii() and arg.isdigit() and len(arg) <= 19 else None
    row = model.get_or_none(model.id == number) if number is not None and number <= MAX_ID else None
    if row is None:
        raise NotFound(f"no {model.__name__.lower()} with id {arg[:20]!r}")
    return row
