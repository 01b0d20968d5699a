"""`/admin/users`: administrators list users, disable and enable them, make or unmake admins, reset
passwords and remove users (rtdp.users does the work and says what removal costs)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from rtdp import users
from rtdp.errors import Conflict, InvalidInput, NotFound
from rtdp.permissions import Principal
from viewer.pages.feeds import BOOL_TRUE
from viewer.pages.render import Ctx


def _actor(ctx: Ctx) -> Principal:
    actor = ctx.require_principal()
    users.require_admin(actor)
    return actor


def _page(ctx: Ctx, status: int = 200, **extra: object) -> Response:
    return ctx.render("users.html", status=status, users=users.list_users(_actor(ctx)), **extra)


def users_page(ctx: Ctx) -> Response:
    return _page(ctx)


def _done(ctx: Ctx, result: dict[str, object], message: str) -> Response:
    if ctx.wants_json:
        return JSONResponse(result)
    return _page(ctx, message=message)


def _failed(ctx: Ctx, exc: InvalidInput | NotFound | Conflict, email: str) -> Response:
    if ctx.wants_json:
        raise exc
    return _page(ctx, status=exc.status, error=exc.message, error_user=email)


def change_user(ctx: Ctx) -> Response:
    """One form per action: `action` is active, admin or password (with `value` or `password`)."""
    actor = _actor(ctx)
    email = ctx.request.path_params["email"]
    action = ctx.form.get("action", "")
    on = ctx.form.get("value", "").lower() in BOOL_TRUE
    try:
        if action == "active":
            view = users.set_active(actor, email, on)
            message = f"{view.email} is {'enabled' if on else 'disabled'}."
        elif action == "admin":
            view = users.set_admin(actor, email, on)
            message = f"{view.email} is {'an administrator' if on else 'no longer an administrator'}."
        elif action == "password":
            view = users.set_password(actor, email, ctx.form.get("password", ""))
            message = f"New password set for {view.email}; their sessions are signed out."
        else:
            raise InvalidInput("unknown action: use active, admin or password", field="action")
    except (InvalidInput, NotFound, Conflict) as exc:
        return _failed(ctx, exc, email)
    return _done(ctx, view.as_dict(), message)


def remove_user(ctx: Ctx) -> Response:
    actor = _actor(ctx)
    email = ctx.request.path_params["email"]
    try:
        removal = users.remove_user(actor, email, ctx.form.get("feeds_to", "").strip() or None)
    except (InvalidInput, NotFound, Conflict) as exc:
        return _failed(ctx, exc, email)
    if removal.feeds_given:
        what = f"its {len(removal.feeds_given)} feeds now belong to {removal.given_to}"
    else:
        what = f"{len(removal.feeds_deleted)} feeds deleted with their points"
    return _done(ctx, removal.as_dict(), f"Removed {removal.email}: {what}.")
