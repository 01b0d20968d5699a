"""Users under /api/v1, for administrators (rtdp.users does the work and says what removal costs):

- `GET /api/v1/users`: `{"users": [{"email", "display_name", "admin", "active", "created", "feeds"}]}`
- `PATCH /api/v1/users/<email>` with any of `{"active": bool, "admin": bool, "password": str}`: the user
- `DELETE /api/v1/users/<email>[?feeds_to=EMAIL]`: 200 `{"removed", "feeds_deleted", "feeds_given", "given_to"}`
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp import users
from rtdp.credentials import check_new_password
from rtdp.errors import InvalidInput
from rtdp.permissions import Principal
from viewer.access import read_object
from viewer.auth import require_principal
from viewer.state import viewer_state


def _change(principal: Principal, email: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"active", "admin", "password"}
    if unknown or not body:
        raise InvalidInput("change any of: active, admin, password")
    for name in ("active", "admin"):
        if name in body and not isinstance(body[name], bool):
            raise InvalidInput(f"{name} must be true or false", field=name)
    if "password" in body:
        if not isinstance(body["password"], str):
            raise InvalidInput("password must be a string", field="password")
        check_new_password(body["password"])
    # Checked first for every field, then applied: a bad value changes nothing.
    users.require_admin(principal)
    view: users.UserView | None = None
    if "password" in body:
        view = users.set_password(principal, email, body["password"])
    if "admin" in body:
        view = users.set_admin(principal, email, body["admin"])
    if "active" in body:
        view = users.set_active(principal, email, body["active"])
    assert view is not None
    return view.as_dict()


async def users_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    views = await state.run_db(users.list_users, principal)
    return JSONResponse({"users": [v.as_dict() for v in views]})


async def user_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    email = request.path_params["email"]
    if request.method == "PATCH":
        body = await read_object(request, state.settings.max_payload)
        result = await state.run_db(_change, principal, email, body)
    else:
        feeds_to = request.query_params.get("feeds_to") or None
        result = (await state.run_db(users.remove_user, principal, email, feeds_to)).as_dict()
    await state.rights.check(changed=True)
    return JSONResponse(result)


def user_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/users", users_route, methods=["GET"]),
        Route("/api/v1/users/{email}", user_route, methods=["PATCH", "DELETE"]),
    ]
