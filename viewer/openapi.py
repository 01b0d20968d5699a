"""`GET /api/v1/openapi.json`: the HTTP API described as OpenAPI 3.0, for clients and for the schemathesis
run in tests/viewer/test_openapi.py (which checks that no answer is a 500 or breaks this description).

Written out here, route by route, rather than derived from the handlers: the handlers validate by hand,
so the description is a promise this test keeps honest. A route added without a line here fails
`test_every_route_is_described`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

JSON = "application/json"
_ref = {"$ref": "#/components/schemas/Error"}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **({"required": list(required)} if required else {})}


NUMBER = {"type": "number"}
TEXT = {"type": "string"}
NULL_TEXT = {"type": "string", "nullable": True}
NULL_NUMBER = {"type": "number", "nullable": True}
BOOL = {"type": "boolean"}
# y: a number, or true/false on bool feeds; x: a number (epoch seconds on datetime feeds).
Y = {"oneOf": [{"type": "number"}, {"type": "boolean"}]}

AXIS = _obj(
    {"name": TEXT, "point_count": {"type": "integer"}, "last_x": NULL_NUMBER,
     "last_y": {"oneOf": [{"type": "number"}, {"type": "boolean"}], "nullable": True}, "last_seen": NULL_NUMBER,
     "unit": NULL_TEXT, "label": NULL_TEXT},
    ("name", "point_count"),
)
FEED = _obj(
    {"name": TEXT, "owner": TEXT, "x_cast": {"enum": ["datetime", "float", "int"]},
     "y_cast": {"enum": ["float", "int", "bool"]}, "description": TEXT, "public": BOOL,
     "retention_days": NULL_NUMBER, "retention_points": {"type": "integer", "nullable": True}, "created": NUMBER,
     "axes": {"type": "array", "items": AXIS}},
    ("name", "owner", "x_cast", "y_cast", "public", "axes"),
)
SHARE = _obj(
    {"id": {"type": "integer"}, "feed": TEXT, "user": NULL_TEXT, "group": NULL_TEXT,
     "access": {"enum": ["read", "write"]}},
    ("id", "feed", "access"),
)
GROUP = _obj(
    {"name": TEXT, "description": TEXT, "members": {"type": "array", "items": TEXT, "nullable": True}},
    ("name", "description"),
)
USER = _obj(
    {"email": TEXT, "display_name": TEXT, "admin": BOOL, "active": BOOL, "created": NUMBER,
     "feeds": {"type": "integer"}},
    ("email", "admin", "active", "feeds"),
)
SERIES = _obj({"feed": TEXT, "axis": TEXT, "hidden": BOOL})
WIDGET = _obj(
    {"type": {"enum": ["chart", "value", "gauge", "state", "table"]}, "title": TEXT, "w": {"type": "integer"},
     "h": {"type": "integer"}, "series": {"type": "array", "items": SERIES}, "feed": TEXT, "axis": TEXT,
     "hidden": BOOL, "min": NUMBER, "max": NUMBER, "thresholds": {"type": "array", "items": NUMBER},
     "on": TEXT, "off": TEXT},
    ("type",),
)
DASHBOARD_SHARE = _obj({"id": {"type": "integer"}, "user": NULL_TEXT, "group": NULL_TEXT, "access": {"enum": ["read"]}},
                       ("id", "access"))
DASHBOARD = _obj(
    {"id": TEXT, "name": TEXT, "owner": TEXT, "range": {"type": "integer"}, "public": BOOL, "editable": BOOL,
     "widgets": {"type": "array", "items": WIDGET},
     "shares": {"type": "array", "items": DASHBOARD_SHARE, "nullable": True}, "created": NUMBER, "updated": NUMBER},
    ("id", "name", "owner", "range", "public", "editable", "widgets"),
)
DASHBOARD_BODY = _obj(
    {"name": TEXT, "widgets": {"type": "array", "items": WIDGET}, "range": {"type": "integer"}, "public": BOOL}
)
POINT = _obj({"id": {"type": "integer"}, "x": NUMBER, "y": Y}, ("id", "x", "y"))
NULL_Y = {"oneOf": [{"type": "number"}, {"type": "boolean"}], "nullable": True}
ALERT_EVENT = _obj(
    {"id": {"type": "integer"}, "rule": {"type": "integer"}, "rule_name": TEXT, "severity": TEXT, "feed": TEXT,
     "axis": TEXT, "state": {"enum": ["firing", "ok", "changed"]}, "at": NUMBER,
     "point": {**_obj({"id": {"type": "integer"}, "x": NUMBER, "y": NULL_Y}), "nullable": True},
     "acknowledged": BOOL, "acknowledged_by": NULL_TEXT},
    ("id", "rule", "feed", "axis", "state", "at", "acknowledged"),
)
ALERT_ACTION = _obj(
    {"type": {"enum": ["browser", "mqtt", "webhook", "email"]}, "url": TEXT, "to": TEXT, "topic": TEXT,
     "payload": TEXT},
    ("type",),
)
ALERT = _obj(
    {"id": {"type": "integer"}, "name": TEXT, "feed": TEXT, "axis": TEXT,
     "kind": {"enum": ["above", "below", "changes", "silent"]}, "threshold": NULL_Y, "hysteresis": NUMBER,
     "for_s": NUMBER, "value": NULL_Y, "silent_s": NULL_NUMBER, "severity": {"enum": ["info", "warning", "critical"]},
     "enabled": BOOL, "repeat_min": NULL_NUMBER, "actions": {"type": "array", "items": ALERT_ACTION},
     "state": {"enum": ["ok", "firing"]}, "since": NULL_NUMBER, "last_result": TEXT, "created": NUMBER,
     "secret": TEXT, "events": {"type": "array", "items": ALERT_EVENT}},
    ("id", "name", "feed", "axis", "kind", "severity", "enabled", "actions", "state"),
)
ALERT_BODY = _obj(
    {"name": TEXT, "feed": TEXT, "axis": TEXT, "kind": {"enum": ["above", "below", "changes", "silent"]},
     "threshold": Y, "hysteresis": NUMBER, "for_s": NUMBER, "value": Y, "silent_s": NUMBER,
     "severity": {"enum": ["info", "warning", "critical"]}, "enabled": BOOL, "repeat_min": NUMBER,
     "actions": {"type": "array", "items": ALERT_ACTION}},
)


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"}}


def _op(summary: str, status: int, schema: dict[str, Any] | None, *, params: tuple[dict[str, Any], ...] = (),
        body: dict[str, Any] | None = None, content: str = JSON) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": summary}
    if schema is not None:
        ok["content"] = {content: {"schema": schema}}
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {str(status): ok, "default": {"description": "an error", "content": {JSON: {"schema": _ref}}}},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return operation


FEED_P = _path("feed")
AXIS_P = _path("axis")
ANY_OBJECT = {"type": "object"}
AXIS_PATCH = _obj({"name": TEXT, "unit": {"type": "string", "maxLength": 32, "nullable": True},
                   "label": {"type": "string", "maxLength": 64, "nullable": True}})
NO_BODY = None


def document() -> dict[str, Any]:
    feeds = {"type": "array", "items": FEED}
    return {
        "openapi": "3.0.3",
        "info": {"title": "rtdp", "version": "1",
                 "description": "HTTP Basic (email:password or any-user:token) or Bearer token."},
        "components": {
            "schemas": {"Error": _obj({"error": TEXT, "code": TEXT}, ("error",))},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"basic": []}, {"bearer": []}, {}],
        "paths": {
            "/api/v1/feeds": {
                "get": _op("The feeds the caller may read (without credentials: the public ones).", 200,
                           _obj({"feeds": feeds}, ("feeds",))),
                "post": _op("Create a feed owned by the caller.", 201, FEED, body=ANY_OBJECT),
            },
            "/api/v1/feeds/{feed}": {
                "get": _op("One feed with its axes.", 200, FEED, params=(FEED_P,)),
                "patch": _op("Change description, public, retention.", 200, FEED, params=(FEED_P,), body=ANY_OBJECT),
                "delete": _op("Delete the feed with every point.", 204, NO_BODY, params=(FEED_P,)),
            },
            "/api/v1/feeds/{feed}/axes": {
                "get": _op("The feed's axes.", 200, _obj({"feed": TEXT, "axes": {"type": "array", "items": AXIS}}),
                           params=(FEED_P,)),
                "post": _op("Create an axis.", 201, AXIS, params=(FEED_P,), body=ANY_OBJECT),
            },
            "/api/v1/feeds/{feed}/axes/{axis}": {
                "get": _op("One axis.", 200, AXIS, params=(FEED_P, AXIS_P)),
                "patch": _op("Rename the axis, or set its unit and display label (null or empty: none).", 200, AXIS,
                             params=(FEED_P, AXIS_P), body=AXIS_PATCH),
                "delete": _op("Delete the axis with its points.", 204, NO_BODY, params=(FEED_P, AXIS_P)),
            },
            "/api/v1/feeds/{feed}/axes/{axis}/points": {
                "get": _op("Points, oldest first.", 200,
                           _obj({"feed": TEXT, "axis": TEXT, "points": {"type": "array", "items": POINT}},
                                ("feed", "axis", "points")),
                           params=(FEED_P, AXIS_P, _query("since"), _query("until"),
                                   _query("limit", {"type": "integer"}), _query("max_points", {"type": "integer"}))),
            },
            "/api/v1/feeds/{feed}/points": {
                "post": _op("Store several points at once, all or nothing.", 200, ANY_OBJECT, params=(FEED_P,),
                            body={"type": "array", "items": ANY_OBJECT}),
            },
            "/api/v1/feeds/{feed}/export": {
                "get": _op("Every point as CSV (or JSON with format=json).", 200, TEXT,
                           params=(FEED_P, _query("format", {"enum": ["csv", "json"]}), _query("axis")),
                           content="text/csv"),
            },
            "/api/v1/feeds/{feed}/stream": {
                "get": _op("Server-Sent Events of stored points; resumes from Last-Event-ID.", 200, TEXT,
                           params=(FEED_P,), content="text/event-stream"),
            },
            "/api/v1/feeds/{feed}/shares": {
                "get": _op("Who the feed is shared with (owner and admins).", 200,
                           _obj({"feed": TEXT, "owner": TEXT, "public": BOOL,
                                 "shares": {"type": "array", "items": SHARE}}, ("feed", "owner", "public", "shares")),
                           params=(FEED_P,)),
                "post": _op("Share with a user or a group.", 201, SHARE, params=(FEED_P,),
                            body=_obj({"user": TEXT, "group": TEXT, "access": {"enum": ["read", "write"]}})),
            },
            "/api/v1/feeds/{feed}/shares/{id}": {
                "delete": _op("Remove a share.", 204, NO_BODY,
                              params=(FEED_P, {**_path("id"), "schema": {"type": "integer", "minimum": 0}})),
            },
            "/api/v1/feeds/{feed}/owner": {
                "put": _op("Give the feed to another user.", 200, _obj({"feed": TEXT, "owner": TEXT}),
                           params=(FEED_P,), body=_obj({"owner": TEXT}, ("owner",))),
            },
            "/api/v1/stream": {
                "get": _op("Server-Sent Events of several feeds' stored points (data names the feed).", 200, TEXT,
                           params=({**_query("feed"), "required": True}, _query("last_event_id")),
                           content="text/event-stream"),
            },
            "/api/v1/dashboards": {
                "get": _op("The caller's dashboards and those shared with them.", 200,
                           _obj({"dashboards": {"type": "array", "items": DASHBOARD}}, ("dashboards",))),
                "post": _op("Create a dashboard.", 201, DASHBOARD, body=DASHBOARD_BODY),
            },
            "/api/v1/dashboards/{dashboard}": {
                "get": _op("One dashboard, as the caller may see it.", 200, DASHBOARD, params=(_path("dashboard"),)),
                "patch": _op("Change name, widgets, range, public (owner and admins).", 200, DASHBOARD,
                             params=(_path("dashboard"),), body=DASHBOARD_BODY),
                "delete": _op("Delete the dashboard (owner and admins).", 204, NO_BODY, params=(_path("dashboard"),)),
            },
            "/api/v1/dashboards/{dashboard}/shares": {
                "post": _op("Share read-only with a user or a group.", 201, DASHBOARD_SHARE,
                            params=(_path("dashboard"),),
                            body=_obj({"user": TEXT, "group": TEXT, "access": {"enum": ["read"]}})),
            },
            "/api/v1/dashboards/{dashboard}/shares/{id}": {
                "delete": _op("Remove a share.", 204, NO_BODY,
                              params=(_path("dashboard"),
                                      {**_path("id"), "schema": {"type": "integer", "minimum": 0}})),
            },
            "/api/v1/groups": {
                "get": _op("Groups (members where the caller may see them).", 200,
                           _obj({"groups": {"type": "array", "items": GROUP}}, ("groups",))),
                "post": _op("Create a group (admins).", 201, GROUP,
                            body=_obj({"name": TEXT, "description": TEXT}, ("name",))),
            },
            "/api/v1/groups/{group}": {
                "delete": _op("Remove a group and its shares (admins).", 204, NO_BODY, params=(_path("group"),)),
            },
            "/api/v1/groups/{group}/members": {
                "post": _op("Add a member (admins).", 201, GROUP, params=(_path("group"),),
                            body=_obj({"user": TEXT}, ("user",))),
            },
            "/api/v1/groups/{group}/members/{email}": {
                "delete": _op("Remove a member (admins).", 204, NO_BODY, params=(_path("group"), _path("email"))),
            },
            "/api/v1/users": {
                "get": _op("Every user (admins).", 200, _obj({"users": {"type": "array", "items": USER}}, ("users",))),
            },
            "/api/v1/users/{email}": {
                "patch": _op("Enable or disable, make admin, set the password (admins).", 200, USER,
                             params=(_path("email"),),
                             body=_obj({"active": BOOL, "admin": BOOL, "password": TEXT})),
                "delete": _op("Remove the user; their feeds are deleted unless feeds_to names an heir (admins).", 200,
                              _obj({"removed": TEXT, "feeds_deleted": {"type": "array", "items": TEXT},
                                    "feeds_given": {"type": "array", "items": TEXT}, "given_to": NULL_TEXT}),
                              params=(_path("email"), _query("feeds_to"))),
            },
            "/api/v1/alerts": {
                "get": _op("Alert rules on the feeds the caller may read.", 200,
                           _obj({"alerts": {"type": "array", "items": ALERT}}, ("alerts",)),
                           params=(_query("feed"),)),
                "post": _op("Make an alert rule (on a feed the caller may write).", 201, ALERT, body=ALERT_BODY),
            },
            "/api/v1/alerts/events": {
                "get": _op("Recent alert events, newest first, and how many rules are firing.", 200,
                           _obj({"firing": {"type": "integer"}, "events": {"type": "array", "items": ALERT_EVENT}},
                                ("firing", "events")),
                           params=(_query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),)),
            },
            "/api/v1/alerts/events/{id}/ack": {
                "post": _op("Acknowledge an alert event.", 200, ALERT_EVENT, params=(_path("id"),)),
            },
            "/api/v1/alerts/{id}": {
                "get": _op("An alert rule, its state and its recent events.", 200, ALERT, params=(_path("id"),)),
                "patch": _op("Change an alert rule (not its feed or axis).", 200, ALERT, params=(_path("id"),),
                             body=ALERT_BODY),
                "delete": _op("Remove an alert rule and its events.", 204, NO_BODY, params=(_path("id"),)),
            },
            "/service/feed_input.json/{feed}/{axis}": {
                "get": _op("The original's URL: store one point (x optional).", 200,
                           _obj({"feed": TEXT, "axis": TEXT, "x": NUMBER, "y": Y}),
                           params=(FEED_P, AXIS_P, _query("x"), _query("y"))),
            },
            "/api/v1/openapi.json": {"get": _op("This description.", 200, ANY_OBJECT)},
            "/healthz": {"get": _op("Alive.", 200, ANY_OBJECT)},
            "/readyz": {"get": _op("Broker connected and database writable.", 200, ANY_OBJECT)},
        },
    }


async def openapi_route(request: Request) -> Response:
    return JSONResponse(document())


def openapi_routes() -> list[BaseRoute]:
    return [Route("/api/v1/openapi.json", openapi_route, methods=["GET"])]
