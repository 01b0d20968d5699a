"""Dashboards under /api/v1 (rtdp.dashboards owns the rules):

- `GET /api/v1/dashboards`: `{"dashboards": [...]}` the caller's own and those shared with them
- `POST /api/v1/dashboards` `{"name", "widgets", "range", "public"}`: 201 and the dashboard (with its `id`)
- `GET|PATCH|DELETE /api/v1/dashboards/<id>`: anyone who may see it reads it (a public one without
  credentials); its owner or an admin changes or deletes it
- `POST /api/v1/dashboards/<id>/shares` `{"user": EMAIL}` or `{"group": NAME}`: shared read-only (201);
  `DELETE /api/v1/dashboards/<id>/shares/<share id>`: 204.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp import dashboards
from rtdp.errors import InvalidInput
from rtdp.permissions import Principal
from viewer.access import read_object
from viewer.auth import principal_from_request, require_principal
from viewer.state import viewer_state


def _list(principal: Principal) -> dict[str, Any]:
    return {"dashboards": [dashboards.as_dict(principal, d) for d in dashboards.list_for(principal)]}


def _create(principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    return dashboards.as_dict(principal, dashboards.create(principal, body))


def _get(principal: Principal | None, dashboard_id: str) -> dict[str, Any]:
    return dashboards.as_dict(principal, dashboards.find(principal, dashboard_id))


def _update(principal: Principal, dashboard_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return dashboards.as_dict(principal, dashboards.update(principal, dashboard_id, body))


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string", field=name)
    return value


def _share(principal: Principal, dashboard_id: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"user", "group", "access"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:100]}", field=sorted(unknown)[0][:64])
    if body.get("access", "read") != "read":
        raise InvalidInput("a dashboard is shared read-only: access must be 'read'", field="access")
    view = dashboards.add_share(principal, dashboard_id, user=_text(body, "user"), group=_text(body, "group"))
    return view.as_dict()


async def dashboards_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    if request.method == "GET":
        return JSONResponse(await state.run_db(_list, principal))
    body = await read_object(request, state.settings.max_payload)
    return JSONResponse(await state.run_db(_create, principal, body), status_code=201)


async def dashboard_route(request: Request) -> Response:
    state = viewer_state(request)
    dashboard_id: str = request.path_params["dashboard"]
    if request.method == "GET":
        principal = await principal_from_request(request)
        return JSONResponse(await state.run_db(_get, principal, dashboard_id))
    signed_in = await require_principal(request)
    if request.method == "DELETE":
        await state.run_db(dashboards.delete, signed_in, dashboard_id)
        return Response(status_code=204)
    body = await read_object(request, state.settings.max_payload)
    return JSONResponse(await state.run_db(_update, signed_in, dashboard_id, body))


async def shares_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    body = await read_object(request, state.settings.max_payload)
    result = await state.run_db(_share, principal, request.path_params["dashboard"], body)
    return JSONResponse(result, status_code=201)


async def share_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    await state.run_db(dashboards.remove_share, principal, request.path_params["dashboard"], request.path_params["id"])
    return Response(status_code=204)


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/dashboards", dashboards_route, methods=["GET", "POST"]),
        Route("/api/v1/dashboards/{dashboard}", dashboard_route, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/v1/dashboards/{dashboard}/shares", shares_route, methods=["POST"]),
        Route("/api/v1/dashboards/{dashboard}/shares/{id:int}", share_route, methods=["DELETE"]),
    ]
