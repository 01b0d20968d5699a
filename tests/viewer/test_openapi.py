"""/api/v1/openapi.json describes every route, and schemathesis, sending what the description allows (and
an admin's credentials), finds no 500 and no answer that breaks the description."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from rtdp.settings import Settings
from tests.viewer.conftest import LiveServer, World
from viewer.app import create_app
from viewer.openapi import document

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin@nothing.com:secret-admin").decode()}


def test_every_route_is_described() -> None:
    described = set(document()["paths"])
    app = create_app(Settings())
    api = {route.path.replace("{id:int}", "{id}") for route in app.routes
           if isinstance(route, Route) and route.path.startswith(("/api/", "/service/"))}
    assert api <= described, sorted(api - described)


def exercise(operation: Any, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=10)

    run()


def test_schemathesis_finds_no_server_error_and_no_broken_answer(live_server: LiveServer, live_world: World) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    # Answered 200 a stream never ends; its refusals are the feed route's (test_access_matrix).
    for operation in (op for op in operations if not op.path.endswith("/stream")):
        for who, headers in (("admin", ADMIN), ("anonymous", {})):
            try:
                exercise(operation, live_server.url, headers)
            except Exception as exc:  # one operation's failure must not hide the next one's
                failures.append(f"{who}: {operation.method.upper()} {operation.path}: {str(exc)[:600]}")
    assert failures == [], "\n\n".join(failures)


pytestmark = pytest.mark.slow
