"""The feed page's Sharing section: share with a user or a group, remove a share, public on or off, give
the feed to another owner. rtdp.sharing does the work; these read the form and answer with the page."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from rtdp import sharing
from rtdp.errors import InvalidInput, NotFound, PermissionDenied
from rtdp.permissions import Principal
from viewer.pages.feeds import BOOL_TRUE, feed_page_response
from viewer.pages.render import Ctx, error_field

SHARE_FIELDS = ("grantee", "access", "owner")


def _actor(ctx: Ctx) -> Principal:
    return ctx.require_principal()


def _done(ctx: Ctx, name: str, result: dict[str, object]) -> Response:
    if ctx.wants_json:
        return JSONResponse(result)
    return ctx.redirect(f"/feeds/{name}#sharing")


def _again(ctx: Ctx, name: str, exc: InvalidInput | NotFound | PermissionDenied) -> Response:
    """The feed page again, with the message at the form field it is about (no JavaScript needed)."""
    if ctx.wants_json:
        raise exc
    feed = sharing.managed_feed(_actor(ctx), name)
    aliases = {"user": "grantee", "group": "grantee"}
    return feed_page_response(
        ctx,
        feed,
        status=exc.status,
        share_error=exc.message,
        share_error_field=error_field(exc, SHARE_FIELDS, aliases),
        share_form=ctx.form,
    )


def add_share(ctx: Ctx) -> Response:
    """Form fields: `grantee` (an email, or a group name), `kind` (user or group), `access`."""
    actor = _actor(ctx)
    name = ctx.request.path_params["feed"]
    grantee = ctx.form.get("grantee", "").strip()
    kind = ctx.form.get("kind", "user")
    try:
        if not grantee:
            raise InvalidInput("give the email of a user or the name of a group", field="grantee")
        if kind not in ("user", "group"):
            raise InvalidInput("share with a user or a group", field="grantee")
        added = sharing.add_share(
            actor,
            name,
            user=grantee if kind == "user" else None,
            group=grantee if kind == "group" else None,
            access=ctx.form.get("access", "read"),
        )
    except (InvalidInput, NotFound) as exc:
        return _again(ctx, name, exc)
    return _done(ctx, name, added.as_dict())


def remove_share(ctx: Ctx) -> Response:
    name = ctx.request.path_params["feed"]
    removed = sharing.remove_share(_actor(ctx), name, int(ctx.request.path_params["id"]))
    return _done(ctx, name, {"removed": removed.as_dict()})


def set_public(ctx: Ctx) -> Response:
    name = ctx.request.path_params["feed"]
    feed = sharing.set_public(_actor(ctx), name, ctx.form.get("public", "").lower() in BOOL_TRUE)
    return _done(ctx, name, {"feed": feed.name, "public": bool(feed.public)})


def transfer(ctx: Ctx) -> Response:
    name = ctx.request.path_params["feed"]
    try:
        feed = sharing.transfer(_actor(ctx), name, ctx.form.get("owner", "").strip(), quota=ctx.settings.feed_quota)
    except (InvalidInput, NotFound, PermissionDenied) as exc:
        return _again(ctx, name, exc)
    return _done(ctx, feed.name, {"feed": feed.name, "owner": feed.owner.email})
