"""Feed pages: the feed list (create, delete) and one feed's axes (add, rename, delete, examples)."""

from __future__ import annotations

from collections import defaultdict

import peewee as pw
from starlette.responses import JSONResponse, Response

from rtdp import catalog
from rtdp.demo import DEMO_EMAILS, DEMO_PASSWORD
from rtdp.errors import Conflict, InvalidInput, PermissionDenied, QuotaExceeded
from rtdp.models import Axis, Feed, Share, User
from rtdp.permissions import Access, allowed, may_manage, readable_feeds
from rtdp.sharing import shares_of
from rtdp.store import create_axis, get_axis
from rtdp.topic import check_name
from viewer.pages.charts import resume_id
from viewer.pages.examples import examples_for
from viewer.pages.render import Ctx, error_field, page_number
from viewer.pages.spark import sparklines

BOOL_TRUE = ("on", "true", "1", "yes")
CREATE_FEED_FIELDS = ("name", "x_cast", "y_cast", "description")


def _fk(row: pw.Model, name: str) -> int:
    # Peewee's `<field>_id` attributes are created at run time; the type stubs do not know them.
    value: int = getattr(row, f"{name}_id")
    return value


def _readable(ctx: Ctx) -> list[Feed]:
    query = readable_feeds(ctx.principal).select(Feed, User).join(User).order_by(Feed.name)
    return [feed for feed in query if isinstance(feed, Feed)]


def _axes_by_feed(feed_ids: list[int]) -> dict[int, list[Axis]]:
    grouped: dict[int, list[Axis]] = defaultdict(list)
    if feed_ids:
        for axis in Axis.select().where(Axis.feed.in_(feed_ids)).order_by(Axis.name):
            grouped[_fk(axis, "feed")].append(axis)
    return grouped


FIRST_AXIS = "value"


def _demo_logins(ctx: Ctx) -> list[str]:
    """With --demo, the demo accounts an anonymous visitor may try (those that still exist)."""
    if ctx.user is not None or not ctx.settings.demo:
        return []
    query = User.select(User.email).where(User.email.in_(DEMO_EMAILS) & User.is_active).order_by(User.email)
    return [user.email for user in query]


def feed_list(ctx: Ctx) -> Response:
    """My feeds, feeds shared with me, public feeds (anonymous visitors see the public ones)."""
    user_id = ctx.user.id if ctx.user is not None else None
    feeds = _readable(ctx)
    shared_ids = {_fk(row, "feed") for row in Share.select(Share.feed).where(Share.user == user_id)}
    sections: dict[str, list[Feed]] = {"mine": [], "shared": [], "public": []}
    for feed in feeds:
        if _fk(feed, "owner") == user_id:
            sections["mine"].append(feed)
        elif feed.public and feed.id not in shared_ids:
            sections["public"].append(feed)
        else:
            sections["shared"].append(feed)
    axes = _axes_by_feed([feed.id for feed in feeds])
    return ctx.render(
        "feeds.html",
        sections=sections,
        demo_logins=_demo_logins(ctx),
        demo_password=DEMO_PASSWORD,
        axes=axes,
        sparks=sparklines(axis for group in axes.values() for axis in group),
        form=ctx.form,
    )


def create_feed_form(ctx: Ctx) -> Response:
    user = ctx.require_user()
    assert ctx.principal is not None  # a signed-in user's
    try:
        spec = catalog.FeedSpec(
            x_cast=ctx.form.get("x_cast", "datetime"),
            y_cast=ctx.form.get("y_cast", "float"),
            description=ctx.form.get("description", "").strip(),
            public=ctx.form.get("public", "").lower() in BOOL_TRUE,
        )
        # The owner is whoever creates it (the original's TODO).
        feed = catalog.new_feed(ctx.principal, ctx.form.get("name", "").strip(), ctx.settings.feed_quota, spec)
    except (InvalidInput, Conflict, QuotaExceeded) as exc:
        if ctx.wants_json:
            raise
        feeds = _readable(ctx)
        axes = _axes_by_feed([f.id for f in feeds])
        return ctx.render(
            "feeds.html",
            status=exc.status,
            sections={"mine": [f for f in feeds if _fk(f, "owner") == user.id], "shared": [], "public": []},
            axes=axes,
            sparks=sparklines(axis for group in axes.values() for axis in group),
            form=ctx.form,
            error=exc.message,
            error_field=error_field(exc, CREATE_FEED_FIELDS, {"feed": "name"}),
        )
    return ctx.redirect(f"/feeds/{feed.name}")


def _may_manage(ctx: Ctx, feed: Feed) -> bool:
    # The API's rule (viewer.access): the owner or an admin; a write share only adds points and axes.
    return ctx.principal is not None and may_manage(ctx.principal, feed)


def _managed_feed(ctx: Ctx, name: str, action: str) -> Feed:
    feed = ctx.feed(name, Access.WRITE)
    if not _may_manage(ctx, feed):
        raise PermissionDenied(f"only the owner or an administrator may {action} in feed {feed.name!r}")
    return feed


def delete_feed(ctx: Ctx) -> Response:
    ctx.require_user()
    feed = ctx.feed(ctx.request.path_params["feed"])
    if not _may_manage(ctx, feed):
        raise PermissionDenied(f"only the owner or an administrator may delete feed {feed.name!r}")
    name = feed.name
    # The database cascades to axes and points (ON DELETE CASCADE, foreign keys on in SQLite).
    Feed.delete().where(Feed.id == feed.id).execute()
    if ctx.wants_json:
        return JSONResponse({"deleted": name})
    return ctx.redirect("/")


def feed_page(ctx: Ctx) -> Response:
    feed = ctx.feed(ctx.request.path_params["feed"])
    return feed_page_response(ctx, feed)


def feed_page_response(ctx: Ctx, feed: Feed, status: int = 200, **extra: object) -> Response:
    # A page of axes at a time: a feed with thousands of axes must not make a page of megabytes.
    size = ctx.settings.page_size
    number = page_number(ctx.request)
    query = Axis.select().where(Axis.feed == feed.id).order_by(Axis.name)
    axes = list(query.offset((number - 1) * size).limit(size + 1))
    more = len(axes) > size
    axes = axes[:size]
    can_manage = _may_manage(ctx, feed)
    return ctx.render(
        "feed.html",
        status=status,
        feed=feed,
        axes=axes,
        page=number,
        more=more,
        sparks=sparklines(axes),
        can_write=allowed(ctx.principal, feed, Access.WRITE),
        can_manage=can_manage,
        resume=resume_id(),
        # The Sharing section: only whoever may change it sees who else may read.
        shares=shares_of(feed) if can_manage else [],
        examples={axis.name: examples_for(ctx.request, ctx.settings, feed, axis.name) for axis in axes},
        example_new=examples_for(ctx.request, ctx.settings, feed, "AXIS"),
        # A feed without axes yet: complete examples for the axis their first point creates.
        example_first=examples_for(ctx.request, ctx.settings, feed, FIRST_AXIS) if not axes else None,
        first_axis=FIRST_AXIS,
        **extra,
    )


def _axis_json(axis: Axis, feed: Feed) -> dict[str, object]:
    return {
        "name": axis.name,
        "point_count": axis.point_count,
        "last_x": axis.last_x,
        "last_y": axis.last_y,
        "last_seen": axis.last_seen,
        "feed": feed.name,
    }


def add_axis(ctx: Ctx) -> Response:
    ctx.require_user()
    feed = ctx.feed(ctx.request.path_params["feed"], Access.WRITE)
    name = ctx.form.get("name", "").strip()
    try:
        axis = create_axis(feed, name, quota=ctx.settings.axis_quota)
    except (InvalidInput, Conflict, QuotaExceeded) as exc:
        if ctx.wants_json:
            raise
        # Without JavaScript the form posts here: show the page again with the message at the field.
        return feed_page_response(
            ctx,
            feed,
            status=exc.status,
            axis_error=exc.message,
            axis_name=name,
            axis_error_field=error_field(exc, ("name",), {"axis": "name"}),
        )
    if ctx.wants_json:
        return JSONResponse(
            {**_axis_json(axis, feed), "examples": examples_for(ctx.request, ctx.settings, feed, axis.name)},
            status_code=201,
        )
    return ctx.redirect(f"/feeds/{feed.name}")


def rename_axis(ctx: Ctx) -> Response:
    ctx.require_user()
    feed = _managed_feed(ctx, ctx.request.path_params["feed"], "rename an axis")
    axis = get_axis(feed, ctx.request.path_params["axis"])
    new_name = check_name(ctx.form.get("name", "").strip(), "axis")
    try:
        with Axis._meta.database.atomic():
            Axis.update(name=new_name).where(Axis.id == axis.id).execute()
    except pw.IntegrityError:
        raise Conflict(f"feed {feed.name!r} already has an axis named {new_name!r}", field="name") from None
    axis = Axis.get_by_id(axis.id)
    if ctx.wants_json:
        return JSONResponse(
            {**_axis_json(axis, feed), "examples": examples_for(ctx.request, ctx.settings, feed, axis.name)}
        )
    return ctx.redirect(f"/feeds/{feed.name}")


def delete_axis(ctx: Ctx) -> Response:
    ctx.require_user()
    feed = _managed_feed(ctx, ctx.request.path_params["feed"], "delete an axis")
    axis = get_axis(feed, ctx.request.path_params["axis"])
    Axis.delete().where(Axis.id == axis.id).execute()
    if ctx.wants_json:
        return JSONResponse({"deleted": axis.name})
    return ctx.redirect(f"/feeds/{feed.name}")
