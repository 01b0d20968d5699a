"""One place that maps errors to responses: JSON for `/api` and `/service`, an HTML page otherwise.

The page is drawn by the one error-page renderer the pages package gives (viewer.pages.render.error_page,
in the site's layout); a viewer without that package answers JSON everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rtdp.errors import RetryLater, RtdpError

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/service/", "/realtime_data_processor/service/", "/readyz", "/healthz")
CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 429: "too_many_attempts", 413: "too_large", 414: "uri_too_long", 503: "unavailable"}


class ViewerError(RtdpError):
    """Root of the errors the viewer raises itself (beyond the core's)."""


class MethodNotAllowed(ViewerError):
    """HEAD on the ingestion URL (Starlette adds HEAD to GET routes; it must not publish)."""

    code = "method_not_allowed"
    status = 405


class URITooLong(ViewerError):
    code = "uri_too_long"
    status = 414


# Draws an error as an HTML page: (request, status, JSON body, headers); see viewer.pages.render.
ErrorPage = Callable[[Request, int, dict[str, object], dict[str, str]], Awaitable[Response]]
# What a page path that matches no route says (the JSON answer keeps Starlette's "Not Found").
NO_PAGE = "There is no page at this address."


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(JSON_PREFIXES)


async def error_response(
    request: Request, status: int, body: dict[str, object], headers: dict[str, str], page: ErrorPage | None
) -> Response:
    if page is None or wants_json(request):
        return JSONResponse(body, status_code=status, headers=headers)
    return await page(request, status, body, headers)


def error_parts(exc: RtdpError) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, JSON body and headers for `exc`: shared by the handlers and the lean ingestion path."""
    headers: dict[str, str] = {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = "GET, POST"
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="rtdp", charset="UTF-8"'
    status = exc.status if 400 <= exc.status < 600 else 500
    return status, exc.as_dict(), headers


Handler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers(page: ErrorPage | None = None) -> dict[Any, Handler]:
    """The app's handlers; `page`, when given, draws errors on paths that are not JSON (the pages)."""

    async def rtdp_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RtdpError)
        status, body, headers = error_parts(exc)
        return await error_response(request, status, body, headers, page)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        body: dict[str, object] = {"error": exc.detail, "code": CODES.get(exc.status_code, "error")}
        if exc.status_code == 404 and not wants_json(request):
            body["error"] = NO_PAGE
        return await error_response(request, exc.status_code, body, dict(exc.headers or {}), page)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Logged with the traceback here; the client only learns that something broke.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await error_response(request, 500, {"error": "internal server error", "code": "error"}, {}, page)

    return {RtdpError: rtdp_error, HTTPException: http_error, Exception: server_error}
