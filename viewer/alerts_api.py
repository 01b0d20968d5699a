"""Alert rules under /api/v1/alerts (rtdp.alerts does the work and holds the permission rule):

- `GET /api/v1/alerts[?feed=F]`: `{"alerts": [rule, ...]}` on the feeds the caller may read.
- `POST /api/v1/alerts` with `{"name", "feed", "axis", "kind", "threshold", "for_s", "severity", "actions"...}`:
  201 and the rule with its `id` (and its webhook `secret`).
- `GET /api/v1/alerts/<id>`: the rule, its `state` and its recent `events`.
- `PATCH /api/v1/alerts/<id>` (any field but feed and axis), `DELETE /api/v1/alerts/<id>`.
- `GET /api/v1/alerts/events[?limit=N]`: `{"firing": N, "events": [...]}`, newest first.
- `POST /api/v1/alerts/events/<id>/ack`: the event, acknowledged.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp import alerts
from rtdp.errors import InvalidInput
from rtdp.permissions import Principal
from viewer.access import read_object
from viewer.auth import require_principal
from viewer.state import viewer_state

MAX_EVENTS = 500


def _checks(request: Request) -> alerts.Checks:
    return alerts.Checks(allow_private=viewer_state(request).settings.webhook_allow_private)


def _list(principal: Principal, feed: str | None) -> dict[str, Any]:
    return {"alerts": alerts.rules_json(principal, alerts.list_rules(principal, feed))}


def _create(principal: Principal, body: dict[str, Any], checks: alerts.Checks) -> dict[str, Any]:
    return alerts.rule_detail(principal, alerts.add_rule(principal, body, checks))


def _get(principal: Principal, rule_id: int) -> dict[str, Any]:
    return alerts.rule_detail(principal, alerts.get_rule(principal, rule_id))


def _update(principal: Principal, rule_id: int, body: dict[str, Any], checks: alerts.Checks) -> dict[str, Any]:
    return alerts.rule_detail(principal, alerts.update_rule(principal, rule_id, body, checks))


def _events(principal: Principal, limit: int) -> dict[str, Any]:
    return {
        "firing": alerts.firing_count(principal),
        "events": alerts.events_json(alerts.recent_events(principal, limit)),
    }


def _ack(principal: Principal, event_id: int) -> dict[str, Any]:
    event = alerts.acknowledge(principal, event_id)
    return alerts.events_json([event])[0]


async def alerts_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    if request.method == "GET":
        feed = request.query_params.get("feed") or None
        return JSONResponse(await state.run_db(_list, principal, feed))
    body = await read_object(request, state.settings.max_payload)
    return JSONResponse(await state.run_db(_create, principal, body, _checks(request)), status_code=201)


async def alert_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    rule_id = alerts.parse_id(request.path_params["id"])
    if request.method == "GET":
        return JSONResponse(await state.run_db(_get, principal, rule_id))
    if request.method == "PATCH":
        body = await read_object(request, state.settings.max_payload)
        return JSONResponse(await state.run_db(_update, principal, rule_id, body, _checks(request)))
    await state.run_db(alerts.remove_rule, principal, rule_id)
    return Response(status_code=204)


async def events_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    raw = request.query_params.get("limit") or "50"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_EVENTS:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_EVENTS}", field="limit")
    return JSONResponse(await state.run_db(_events, principal, int(raw)))


async def ack_route(request: Request) -> Response:
    state = viewer_state(request)
    principal = await require_principal(request)
    event_id = alerts.parse_id(request.path_params["id"])
    return JSONResponse(await state.run_db(_ack, principal, event_id))


def alert_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/alerts", alerts_route, methods=["GET", "POST"]),
        Route("/api/v1/alerts/events", events_route, methods=["GET"]),
        Route("/api/v1/alerts/events/{id}/ack", ack_route, methods=["POST"]),
        Route("/api/v1/alerts/{id}", alert_route, methods=["GET", "PATCH", "DELETE"]),
    ]
