"""Liveness, readiness and metrics."""

from __future__ import annotations

import peewee as pw
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rtdp.store import dialect_of
from viewer.state import viewer_state


def _database_writable(db: pw.Database, min_free: int) -> bool:
    # A write transaction that changes nothing: proves the database takes writes (not locked, not read-only).
    with db.atomic():
        db.execute_sql("UPDATE schema_version SET version = version WHERE 1 = 0")  # type: ignore[no-untyped-call]
    # ...and room to write into: on a full disk every commit fails (SQLite: "database or disk is full").
    free = dialect_of(db).free_bytes(db)
    return free is None or free >= min_free


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    state = viewer_state(request)
    mqtt_ok = state.publisher.connected
    try:
        db_ok = await state.run_db(_database_writable, state.db, state.settings.min_free_disk)
    except Exception:  # noqa: BLE001 -- any database failure means "not ready", reported below
        db_ok = False
    body = {"status": "ready" if mqtt_ok and db_ok else "unavailable", "mqtt": mqtt_ok, "database": db_ok}
    headers = {} if mqtt_ok and db_ok else {"Retry-After": "2"}
    return JSONResponse(body, status_code=200 if mqtt_ok and db_ok else 503, headers=headers)


async def metrics(request: Request) -> Response:
    state = viewer_state(request)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def health_routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
