"""`/groups`: the groups and their members. Administrators create and remove groups and change members
(rtdp.groups says why only they); everyone signed in sees the names, to share a feed with one."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from rtdp import groups
from rtdp.errors import Conflict, InvalidInput, NotFound
from rtdp.permissions import Principal
from viewer.pages.render import Ctx, error_field

GROUP_FIELDS = ("name", "description", "user")


def _actor(ctx: Ctx) -> Principal:
    return ctx.require_principal()


def _page(ctx: Ctx, status: int = 200, **extra: object) -> Response:
    actor = _actor(ctx)
    return ctx.render("groups.html", status=status, groups=groups.list_groups(actor), manage=actor.is_admin, **extra)


def groups_page(ctx: Ctx) -> Response:
    return _page(ctx)


def _answer(ctx: Ctx, view: groups.GroupView | None, anchor: str = "") -> Response:
    if ctx.wants_json:
        return JSONResponse(view.as_dict() if view is not None else {})
    return ctx.redirect(f"/groups{anchor}")


def _again(ctx: Ctx, exc: InvalidInput | NotFound | Conflict, form: str) -> Response:
    """The page again with the message at the field it is about (no JavaScript needed)."""
    if ctx.wants_json:
        raise exc
    return _page(
        ctx, status=exc.status, error=exc.message, error_form=form,
        error_field=error_field(exc, GROUP_FIELDS, {"group": "name"}), form=ctx.form,
    )


def create_group(ctx: Ctx) -> Response:
    actor = _actor(ctx)
    try:
        view = groups.create_group(actor, ctx.form.get("name", "").strip(), ctx.form.get("description", "").strip())
    except (InvalidInput, Conflict) as exc:
        return _again(ctx, exc, "create-group")
    return _answer(ctx, view, f"#group-{view.name}")


def remove_group(ctx: Ctx) -> Response:
    groups.remove_group(_actor(ctx), ctx.request.path_params["group"])
    return _answer(ctx, None)


def add_member(ctx: Ctx) -> Response:
    name = ctx.request.path_params["group"]
    try:
        view = groups.add_member(_actor(ctx), name, ctx.form.get("user", "").strip())
    except NotFound as exc:
        return _again(ctx, exc, f"add-member-{name}")
    return _answer(ctx, view, f"#group-{view.name}")


def remove_member(ctx: Ctx) -> Response:
    view = groups.remove_member(_actor(ctx), ctx.request.path_params["group"], ctx.form.get("user", ""))
    return _answer(ctx, view, f"#group-{view.name}")
