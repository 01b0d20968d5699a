"""Groups under /api/v1 (rtdp.groups does the work; administrators manage, everyone signed in lists):

- `GET /api/v1/groups`: `{"groups": [{"name", "description", "members"}]}` (members null where hidden)
- `POST /api/v1/groups` with `{"name", "description"?}`: 201 and the group
- `DELETE /api/v1/groups/<name>`: 204; its shares go with it
- `POST /api/v1/groups/<name>/members` with `{"user": EMAIL}`: the group; `DELETE .../members/<email>`: 204
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp import groups
from rtdp.errors import InvalidInput
from viewer.access import read_object
from viewer.auth import require_principal
from viewer.state import viewer_state


def _text(body: dict[str, Any], name: str, allowed: set[str], default: str | None = None) -> str:
    if set(body) - allowed:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(set(body) - allowed))[:100]}")
    value = body.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    return value


async def groups_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    if request.method == "GET":
        views = await state.run_db(groups.list_groups, principal)
        return JSONResponse({"groups": [v.as_dict() for v in views]})
    body = await read_object(request, state.settings.max_payload)
    name = _text(body, "name", {"name", "description"})
    description = _text(body, "description", {"name", "description"}, "")
    created = await state.run_db(groups.create_group, principal, name, description)
    return JSONResponse(created.as_dict(), status_code=201)


async def group_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    await state.run_db(groups.remove_group, principal, request.path_params["group"])
    await state.rights.check(changed=True)
    return Response(status_code=204)


async def members_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    body = await read_object(request, state.settings.max_payload)
    email = _text(body, "user", {"user"})
    view = await state.run_db(groups.add_member, principal, request.path_params["group"], email)
    await state.rights.check(changed=True)
    return JSONResponse(view.as_dict(), status_code=201)


async def member_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    params = request.path_params
    await state.run_db(groups.remove_member, principal, params["group"], params["email"])
    await state.rights.check(changed=True)
    return Response(status_code=204)


def group_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/groups", groups_route, methods=["GET", "POST"]),
        Route("/api/v1/groups/{group}", group_route, methods=["DELETE"]),
        Route("/api/v1/groups/{group}/members", members_route, methods=["POST"]),
        Route("/api/v1/groups/{group}/members/{email}", member_route, methods=["DELETE"]),
    ]
