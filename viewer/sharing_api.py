"""Sharing under /api/v1 (rtdp.sharing does the work):

- `GET /api/v1/feeds/<feed>/shares`: `{"feed", "owner", "public", "shares": [...]}`, each share
  `{"id", "feed", "user", "group", "access"}` (user an email or null, group a name or null)
- `POST /api/v1/feeds/<feed>/shares` with `{"user": EMAIL}` or `{"group": NAME}` and `"access": "read"|"write"`
  (default read): 201 and the share; sharing again with the same user or group changes its access.
- `DELETE /api/v1/feeds/<feed>/shares/<id>`: 204.
- `PUT /api/v1/feeds/<feed>/owner` with `{"owner": EMAIL}`: the feed given to another user.
Public on and off: `PATCH /api/v1/feeds/<feed>` with `{"public": true|false}` (viewer.api).

Only the feed's owner or an admin (rtdp.permissions.may_manage). After a change this viewer drops its
cached decisions and has its open streams check again at once; other processes follow within
rtdp.revision.POLL_PERIOD.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp import sharing
from rtdp.errors import InvalidInput
from rtdp.models import User
from rtdp.permissions import Principal
from viewer.access import read_object
from viewer.auth import require_principal
from viewer.state import viewer_state


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string", field=name)
    return value


def _shares_json(principal: Principal, name: str) -> dict[str, Any]:
    feed = sharing.managed_feed(principal, name)
    owner = User.get_by_id(feed.owner_id)
    return {
        "feed": feed.name,
        "owner": owner.email,
        "public": bool(feed.public),
        "shares": [s.as_dict() for s in sharing.shares_of(feed)],
    }


def _add(principal: Principal, name: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"user", "group", "access"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:100]}")
    access = body.get("access", "read")
    if not isinstance(access, str):
        raise InvalidInput("access must be 'read' or 'write'", field="access")
    view = sharing.add_share(principal, name, user=_text(body, "user"), group=_text(body, "group"), access=access)
    return view.as_dict()


def _transfer(principal: Principal, name: str, body: dict[str, Any], quota: int) -> dict[str, Any]:
    if set(body) - {"owner"}:
        raise InvalidInput("only the owner can be given", field="owner")
    owner = _text(body, "owner", required=True)
    assert owner is not None
    feed = sharing.transfer(principal, name, owner, quota=quota)
    return {"feed": feed.name, "owner": User.get_by_id(feed.owner_id).email}


async def shares_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    name = request.path_params["feed"]
    if request.method == "GET":
        return JSONResponse(await state.run_db(_shares_json, principal, name))
    body = await read_object(request, state.settings.max_payload)
    result = await state.run_db(_add, principal, name, body)
    await state.rights.check(changed=True)
    return JSONResponse(result, status_code=201)


async def share_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    share_id: int = request.path_params["id"]
    await state.run_db(sharing.remove_share, principal, request.path_params["feed"], share_id)
    await state.rights.check(changed=True)
    return Response(status_code=204)


async def owner_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    body = await read_object(request, state.settings.max_payload)
    result = await state.run_db(_transfer, principal, request.path_params["feed"], body, state.settings.feed_quota)
    await state.rights.check(changed=True)
    return JSONResponse(result)


def sharing_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/feeds/{feed}/shares", shares_route, methods=["GET", "POST"]),
        Route("/api/v1/feeds/{feed}/shares/{id:int}", share_route, methods=["DELETE"]),
        Route("/api/v1/feeds/{feed}/owner", owner_route, methods=["PUT"]),
    ]
